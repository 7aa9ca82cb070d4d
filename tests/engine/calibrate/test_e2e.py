"""End-to-end distillation: the soft-target loss and its gradient, the teacher distribution and its file, and the
stage itself — it lowers the held-out loss, changes only statistics and norms, and never makes a model worse."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bitsmith.engine.calibrate.e2e import (
    DistillConfig,
    distill,
    load_teacher,
    model_logit_rows,
    save_teacher,
    teacher_targets,
)
from bitsmith.engine.errors import BadInputError
from bitsmith.engine.finetune.loss import chunked_lm_loss
from bitsmith.engine.quant.linear import QuantLinear
from bitsmith.engine.quant.store import model_bpw, set_submodule

VOCAB = 128


def test_soft_target_loss_and_gradient_match_autograd() -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 37, 24, generator=gen, requires_grad=True)
    weight = torch.randn(VOCAB, 24, generator=gen)
    index = torch.stack([torch.randperm(VOCAB, generator=gen)[:5] for _ in range(74)]).view(2, 37, 5)
    prob = torch.softmax(torch.randn(2, 37, 5, generator=gen), -1)
    got = chunked_lm_loss(hidden, weight, index, target_probs=prob, chunk=16)
    got.backward()
    h = hidden.detach().clone().requires_grad_(True)
    logq = torch.log_softmax(h @ weight.t(), -1)
    want = -(prob * logq.gather(-1, index)).sum()
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(hidden.grad, h.grad, rtol=1e-4, atol=1e-5)
    # a one-hot distribution is the label loss
    labels = index[..., 0]
    onehot = chunked_lm_loss(hidden, weight, labels[..., None], target_probs=torch.ones(2, 37, 1))
    torch.testing.assert_close(onehot, chunked_lm_loss(hidden, weight, labels), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_top_k_with_the_rest_as_one_category_matches_autograd(softcap: float | None) -> None:
    """-sum_i p_i log q_i - rest log(1 - sum_i q_i): the teacher's exact distribution coarsened to k + 1 categories."""
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 37, 24, generator=gen, requires_grad=True)
    weight = torch.randn(VOCAB, 24, generator=gen)
    index = torch.stack([torch.randperm(VOCAB, generator=gen)[:5] for _ in range(74)]).view(2, 37, 5)
    full = torch.softmax(torch.randn(2, 37, 5 + 1, generator=gen), -1)
    prob, rest = full[..., :5], full[..., 5].clone()
    rest[0, :3] = 0.0  # the teacher's top k hold all its mass: no rest term (and no 0 * log 0)
    prob[0, :3] /= prob[0, :3].sum(-1, keepdim=True)
    got = chunked_lm_loss(hidden, weight, index, target_probs=prob, target_rest=rest, chunk=16, softcap=softcap)
    got.backward()
    h = hidden.detach().clone().requires_grad_(True)
    logits = h @ weight.t()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    logq = torch.log_softmax(logits, -1)
    log_rest = torch.log1p(-logq.gather(-1, index).exp().sum(-1))
    want = -(prob * logq.gather(-1, index)).sum() - (rest * log_rest).sum()
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(hidden.grad, h.grad, rtol=1e-4, atol=1e-5)
    # leaving the rest out is a different loss (the renormalised top k), not the same one
    plain = chunked_lm_loss(hidden.detach(), weight, index, target_probs=prob / prob.sum(-1, keepdim=True),
                            softcap=softcap)
    assert abs(float(plain) - float(want.detach())) > 1.0


def _trained_model() -> tuple[LlamaForCausalLM, torch.Tensor]:
    """A tiny Llama trained on a random bigram source (so its distribution is worth distilling) and windows of it."""
    gen = torch.Generator().manual_seed(0)
    bigram = torch.softmax(torch.randn(VOCAB, VOCAB, generator=gen) * 2.0, -1)

    def windows(n: int, length: int = 48) -> torch.Tensor:
        rows = []
        for _ in range(n):
            tok = [int(torch.randint(0, VOCAB, (1,), generator=gen))]
            while len(tok) < length:
                tok.append(int(torch.multinomial(bigram[tok[-1]], 1, generator=gen)))
            rows.append(tok)
        return torch.tensor(rows)

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        data = windows(8)
        model(data, labels=data).loss.backward()
        opt.step()
    return model.eval(), windows(14)


def _quantized_copy(model: LlamaForCausalLM, fmt: str) -> LlamaForCausalLM:
    student = LlamaForCausalLM(model.config)
    student.load_state_dict(model.state_dict())
    for name, mod in list(student.named_modules()):
        if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}":
            set_submodule(student, name, QuantLinear.from_linear(mod, fmt))
    return student.eval()


@pytest.fixture(scope="module")
def setup() -> tuple[LlamaForCausalLM, torch.Tensor]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _trained_model()
    finally:
        torch.set_num_threads(threads)


def test_teacher_is_the_models_top_k_and_survives_a_file(setup, tmp_path: Path) -> None:
    model, ids = setup
    teacher = teacher_targets(ids, model_logit_rows(model, ids), top_k=8)
    assert teacher.index.shape == teacher.prob.shape == (*ids.shape, 8) and teacher.rest.shape == ids.shape
    torch.testing.assert_close(teacher.prob.float().sum(-1) + teacher.rest, torch.ones(ids.shape), atol=1e-6, rtol=0)
    with torch.no_grad():
        logits = model(ids).logits
    top = torch.topk(logits, 8, dim=-1)
    assert torch.equal(teacher.index.long(), top.indices)
    # the model's own probabilities, not renormalised over the k
    torch.testing.assert_close(teacher.prob.float(), torch.softmax(logits, -1).gather(-1, top.indices),
                               atol=1e-3, rtol=1e-3)
    assert float(teacher.rest.min()) > 0.01
    path = tmp_path / "t" / "teacher.safetensors"
    save_teacher(path, teacher)
    back = load_teacher(path, ids, 8)
    assert back is not None and torch.equal(back.prob, teacher.prob) and torch.equal(back.index, teacher.index)
    assert torch.equal(back.rest, teacher.rest)
    assert load_teacher(path, ids[1:], 8) is None  # other windows
    assert load_teacher(path, ids, 16) is None  # another k
    path.write_bytes(b"not safetensors")
    assert load_teacher(path, ids, 8) is None
    with pytest.raises(BadInputError, match="no calibration windows"):
        teacher_targets(ids[:0], iter([]), 8)


def test_distillation_lowers_the_held_out_loss_and_changes_only_statistics(setup) -> None:
    model, ids = setup
    teacher = teacher_targets(ids, model_logit_rows(model, ids), top_k=16)
    student = _quantized_copy(model, "int2_g16_dq8")
    codes = {n: m.qweight.clone() for n, m in student.named_modules() if isinstance(m, QuantLinear)}
    bits = model_bpw(student)
    steps = []
    report = distill(student, teacher, DistillConfig(epochs=3, lr=3e-3, norm_lr=3e-3, batch_size=2, top_k=16),
                     on_progress=lambda done, total: steps.append((done, total)))
    assert report.kept and report.val_after < report.val_before
    assert report.steps == 15 and steps[-1] == (15, 15)  # 10 training windows, batches of 2, 3 epochs
    after = {n: m for n, m in student.named_modules() if isinstance(m, QuantLinear)}
    assert set(after) == set(codes) and all(torch.equal(after[n].qweight, c) for n, c in codes.items())
    assert model_bpw(student) == bits
    assert all(not p.requires_grad for p in student.parameters())
    # what is reported is what is stored: the held-out loss of the plain QuantLinear model
    with torch.no_grad():
        val = ids[-4:]
        logq = torch.log_softmax(student(val).logits, -1)
    top = logq.gather(-1, teacher.index[-4:].long())
    want = (-(teacher.prob[-4:].float() * top).sum(-1) - teacher.rest[-4:] * torch.log1p(-top.exp().sum(-1))).mean()
    assert float(want) == pytest.approx(report.val_after, rel=1e-4)


def test_distillation_that_does_not_help_restores_the_calibrated_model(setup) -> None:
    model, ids = setup
    teacher = teacher_targets(ids, model_logit_rows(model, ids), top_k=16)
    student = _quantized_copy(model, "int4_g16")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    report = distill(student, teacher, DistillConfig(epochs=1, lr=5.0, norm_lr=5.0, batch_size=5, top_k=16))
    assert not report.kept and report.val_after == report.val_before
    after = student.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_no_epochs_is_a_no_op_and_bad_settings_are_clear() -> None:
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    assert distill(model, None, DistillConfig()).steps == 0  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="no quantized linear layers"):
        distill(model, None, DistillConfig(epochs=1))  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="epochs"):
        DistillConfig(epochs=-1)
    with pytest.raises(BadInputError, match="learning rates"):
        DistillConfig(lr=0)
