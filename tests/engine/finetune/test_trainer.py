"""The trainer on a tiny quantized Llama: learns, keeps the format, frees gradients, resumes exactly, stops on NaN."""

from __future__ import annotations

import random

import pytest
import torch

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.finetune.checkpoint import load_checkpoint, save_checkpoint
from bitsmith.engine.finetune.packing import BatchPlan, eval_batches, pack_rows
from bitsmith.engine.finetune.qlinear import QSFTLinear, unpack_t
from bitsmith.engine.finetune.qsft import NonFiniteError, TrainConfig, Trainer
from bitsmith.engine.finetune.template import Example
from bitsmith.engine.quant.linear import QuantLinear
from bitsmith.engine.quant.store import model_bpw

VOCAB = 96


def _data(seed: int) -> tuple[list[Example], list[Example]]:
    """Arithmetic sequences mod VOCAB (learnable), split into train and held-out."""
    rng = random.Random(seed)
    out = []
    for _ in range(60):
        start, stride, n = rng.randrange(VOCAB), rng.choice([1, 2, 3]), rng.randint(12, 30)
        out.append(Example(tuple((start + stride * j) % VOCAB for j in range(n)), (True,) * n))
    return out[:48], out[48:]


def _trainer(make_tiny, method: str = "qsft", steps: int = 12, seed: int = 0, **kw) -> Trainer:  # noqa: ANN001
    train, held = _data(seed)
    plan = BatchPlan(pack_rows(train, 64), train, 2, seed, 0)
    cfg = TrainConfig(method=method, steps=steps, seq_len=64, batch_size=2, lr=kw.pop("lr", 3e-3),
                      code_lr=kw.pop("code_lr", 0.2), warmup=2, seed=seed, **kw)
    return Trainer(make_tiny(vocab=VOCAB, seed=seed), cfg, plan, eval_batches(held, 64, 0, 0), "cpu")


def _codes(model) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return {n: m.qweight.clone() for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def test_qsft_learns_moves_codes_and_keeps_the_format(make_tiny) -> None:
    fresh = make_tiny(vocab=VOCAB, seed=0)  # the model the trainer starts from (same seed)
    before_codes, bpw = _codes(fresh), model_bpw(fresh)
    tr = _trainer(make_tiny, steps=25)
    before = tr.evaluate()
    losses = [tr.train_step().loss for _ in range(25)]
    for p in tr.model.parameters():
        assert p.grad is None  # every gradient was applied and freed inside the backward
    after_train = tr.evaluate()
    model = tr.finish()
    after = tr.evaluate()
    assert after == pytest.approx(after_train, abs=1e-3)  # write-back changes nothing but fp16 rounding
    assert after < before - 0.2 and sum(losses[-5:]) < sum(losses[:5])
    assert model_bpw(model) == bpw
    codes = _codes(model)
    changed = sum(int((codes[n] != before_codes[n]).sum()) for n in codes)
    assert changed > 0
    for m in model.modules():
        if isinstance(m, QuantLinear):
            q = unpack_t(m.qweight, m.spec.bits, m.in_features)
            assert q.min() >= 0 and q.max() <= m.spec.maxq
        assert not isinstance(m, QSFTLinear)
    state = tr.optimizer_state_bytes()
    weights = tr.quantized_weights()
    assert state["code_residual"] <= weights * 0.5 + 64 * 16  # 4 bits per weight (+ padding of odd K)


def test_lora_baseline_trains_adapters_only_and_merges_into_the_same_format(make_tiny) -> None:
    fresh = make_tiny(vocab=VOCAB, seed=0)
    before_codes, bpw = _codes(fresh), model_bpw(fresh)
    tr = _trainer(make_tiny, method="lora", steps=20, lr=1e-2)
    before = tr.evaluate()
    for _ in range(20):
        tr.train_step()
    assert all(n.endswith(("lora_a", "lora_b")) for n in tr.adam.params)
    assert all(torch.equal(m.base.qweight, before_codes[n]) for n, m in tr.adapters().items())
    unmerged = tr.evaluate()
    assert unmerged < before
    model = tr.finish(merge=True)
    assert model_bpw(model) == bpw
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert tr.evaluate() < before


def test_resume_from_a_checkpoint_is_exact(make_tiny, tmp_path) -> None:
    seed = random.randint(0, 100)
    straight = _trainer(make_tiny, steps=6, seed=seed)
    losses = [straight.train_step().loss for _ in range(6)]

    first = _trainer(make_tiny, steps=6, seed=seed)
    part = [first.train_step().loss for _ in range(3)]
    save_checkpoint(tmp_path / "ck", first.state_tensors(), {"step": first.step, "history": first.history_dict()})
    del first
    second = _trainer(make_tiny, steps=6, seed=seed)
    tensors, meta = load_checkpoint(tmp_path / "ck")
    second.load_state(tensors, meta["step"], meta["history"])
    part += [second.train_step().loss for _ in range(3)]
    assert part == losses
    a, b = straight.state_tensors(), second.state_tensors()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert second.history.train == straight.history.train


def test_non_finite_loss_stops_before_anything_changes(make_tiny) -> None:
    tr = _trainer(make_tiny, steps=5)
    tr.train_step()
    state = {k: v.clone() for k, v in tr.state_tensors().items()}
    norm = next(p for n, p in tr.model.named_parameters() if n.endswith("norm.weight"))
    with torch.no_grad():
        norm[0] = float("nan")
    with pytest.raises(NonFiniteError, match="step 2: the loss is not finite") as err:
        tr.train_step()
    assert "--lr" in err.value.hint and err.value.kind == "bad_input"
    for key, t in tr.state_tensors().items():
        if not key.endswith("norm.weight"):
            assert torch.equal(t, state[key]), key


def test_config_checks_and_fingerprint() -> None:
    with pytest.raises(BadInputError, match="unknown fine-tuning method"):
        TrainConfig(method="full")
    with pytest.raises(BadInputError, match="steps must be a positive"):
        TrainConfig(steps=0)
    a, b = TrainConfig(steps=10), TrainConfig(steps=10, eval_every=3)
    assert a.fingerprint() == b.fingerprint() != TrainConfig(steps=11).fingerprint()
    assert TrainConfig(method="lora").lr != TrainConfig().lr and TrainConfig(steps=300).warmup == 30
