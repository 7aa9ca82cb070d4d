"""GPTQ checkpoints (built here in AutoGPTQ's and GPTQModel's layouts, packed by this test's own code) import
bit-exactly, act-order layers are re-quantized and counted, and bad checkpoints get clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from bitsmith.engine.errors import BadInputError, UnsupportedModelError
from bitsmith.engine.quant.gptq_import import import_gptq
from bitsmith.engine.quant.store import load_quantized

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _pack_along_k(codes: np.ndarray, bits: int) -> np.ndarray:
    """AutoGPTQ's qweight: codes [N, K] -> int32 [ceil(K·b/32), N], code k at bits (k mod p)·b of word k // p."""
    p = 32 // bits
    n, k = codes.shape
    rows = -(-k // p)
    padded = np.zeros((n, rows * p), dtype=np.uint64)
    padded[:, :k] = codes
    words = np.zeros((rows, n), dtype=np.uint64)
    for j in range(p):
        words |= padded[:, j::p].T << np.uint64(bits * j)
    return words.astype(np.uint32).view(np.int32)


def _pack_along_n(values: np.ndarray, bits: int) -> np.ndarray:
    """AutoGPTQ's qzeros: [G, N] -> int32 [G, ceil(N·b/32)], value n at bits (n mod p)·b of word n // p."""
    p = 32 // bits
    g, n = values.shape
    cols = -(-n // p)
    padded = np.zeros((g, cols * p), dtype=np.uint64)
    padded[:, :n] = values
    words = np.zeros((g, cols), dtype=np.uint64)
    for j in range(p):
        words |= padded[:, j::p] << np.uint64(bits * j)
    return words.astype(np.uint32).view(np.int32)


def _gptq_layer(w: torch.Tensor, bits: int, group: int, sym: bool, v1: bool, act_order: bool,
                gen: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Quantize w [N, K] by min-max RTN into GPTQ tensors; return them and the weight they mean."""
    n, k = w.shape
    maxq = (1 << bits) - 1
    g_idx = torch.arange(k) // group
    if act_order:
        g_idx = g_idx[torch.randperm(k, generator=gen)]
    groups = -(-k // group)
    scales = torch.empty(groups, n)
    zeros = torch.empty(groups, n, dtype=torch.int64)
    for gi in range(groups):
        cols = w[:, g_idx == gi]
        if sym:
            s = cols.abs().amax(dim=1).clamp_min(1e-6) / ((maxq + 1) // 2)
            z = torch.full((n,), (maxq + 1) // 2)
        else:
            lo, hi = cols.amin(dim=1), cols.amax(dim=1)
            s = ((hi - lo) / maxq).clamp_min(1e-6)
            z = torch.round(-lo / s).clamp(0, maxq).long()
        scales[gi], zeros[gi] = s, z
    scales = scales.half()
    s_k, z_k = scales.float()[g_idx].t(), zeros[g_idx].t()
    codes = torch.clamp(torch.round(w / s_k) + z_k, 0, maxq).long()
    stored_zeros = (zeros - 1) & maxq if v1 else zeros
    effective = stored_zeros + 1 if v1 else stored_zeros  # what AutoGPTQ's kernels subtract (a stored 2^b - 1 → 2^b)
    meant = (codes.float() - effective.float()[g_idx].t()) * s_k
    tensors = {
        "qweight": torch.from_numpy(_pack_along_k(codes.numpy().astype(np.uint64), bits)),
        "qzeros": torch.from_numpy(_pack_along_n(stored_zeros.numpy().astype(np.uint64), bits)),
        "scales": scales, "g_idx": g_idx.to(torch.int32),
    }
    return tensors, meant


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {f"t{i}": i for i in range(100)} | {"<unk>": 100}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def _checkpoint(folder: Path, bits: int, group: int, sym: bool, fmt: str, act_order: bool = False,
                zero_at_zero: bool = False) -> LlamaForCausalLM:
    """Write a GPTQ checkpoint of a random tiny Llama to `folder`; return the float model it stands for."""
    seed = int(torch.seed()) % 2**31
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for i, layer in enumerate(model.model.layers):
        for name in LINEARS:
            parent = "mlp" if name in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            lin = getattr(getattr(layer, parent), name)
            prefix = f"model.layers.{i}.{parent}.{name}"
            w = lin.weight.detach().clone()
            if zero_at_zero:
                w[:, :group] = w[:, :group].abs()  # a group whose minimum is >= 0 has zero-point 0
            tensors, meant = _gptq_layer(w, bits, group, sym, fmt == "gptq", act_order, gen)
            del state[prefix + ".weight"]
            state.update({f"{prefix}.{k}": v for k, v in tensors.items()})
            with torch.no_grad():
                lin.weight.copy_(meant)
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    cfg.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": bits, "group_size": group, "sym": sym,
                                     "desc_act": act_order, "checkpoint_format": fmt}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    _tokenizer().save_pretrained(folder)
    return model


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()


def _same_weights(got: torch.nn.Module, ref: torch.nn.Module) -> float:
    """Largest |difference| between each imported layer's dequantized weight and the weight its checkpoint means."""
    from bitsmith.engine.quant.linear import QuantLinear

    worst = 0.0
    for name, mod in got.named_modules():
        if isinstance(mod, QuantLinear):
            worst = max(worst, float((mod.dequantize() - ref.get_submodule(name).weight).abs().max()))
    return worst


@pytest.mark.parametrize("bits,group,sym,fmt,expect", [
    (4, 32, True, "gptq", "int4_g32_sym"),
    (4, 32, False, "gptq_v2", "int4_g32"),
    (2, 32, False, "gptq", "int2_g32"),
    (8, 64, True, "gptq_v2", "int8_g64_sym"),
])
def test_import_is_exact(tmp_path: Path, bits: int, group: int, sym: bool, fmt: str, expect: str) -> None:
    ref = _checkpoint(tmp_path / "gptq", bits, group, sym, fmt)
    out, report = import_gptq(tmp_path / "gptq", tmp_path / "native")
    assert len(report.exact) == 14 and not report.requantized
    formats = set(report.formats.values())
    assert expect in formats and formats <= {expect, expect.replace("_sym", "") + "_zf", expect.replace("_sym", "")}
    got = load_quantized(out).model
    assert _same_weights(got, ref) < 1e-6  # the codes and scales came across untouched
    ids = torch.randint(0, 101, (2, 11))
    err = (_logits(got, ids) - _logits(ref, ids)).norm() / _logits(ref, ids).norm()
    assert err < 2e-3  # only the fp16 rounding of embeddings and norms at save time differs


def test_v1_zero_that_wraps_keeps_fp16_zeros(tmp_path: Path) -> None:
    """AutoGPTQ v1 stores z - 1; a zero-point of 0 is stored as 2^b - 1 and means 2^b, beyond b-bit codes."""
    ref = _checkpoint(tmp_path / "gptq", 4, 32, False, "gptq", zero_at_zero=True)
    out, report = import_gptq(tmp_path / "gptq", tmp_path / "native")
    assert set(report.formats.values()) == {"int4_g32_zf"} and len(report.exact) == 14
    assert _same_weights(load_quantized(out).model, ref) < 1e-6


def test_act_order_layers_are_requantized_and_counted(tmp_path: Path) -> None:
    ref = _checkpoint(tmp_path / "gptq", 4, 32, False, "gptq", act_order=True)
    out, report = import_gptq(tmp_path / "gptq", tmp_path / "native")
    assert len(report.requantized) == 14 and not report.exact
    meta = json.loads((out / "bitsmith.json").read_text())
    assert meta["recipe"]["import"]["requantized"] == 14
    ids = torch.randint(0, 101, (1, 9))
    err = (_logits(load_quantized(out).model, ids) - _logits(ref, ids)).norm() / _logits(ref, ids).norm()
    assert 2e-3 < err < 0.1  # lossy, but a faithful re-quantization of the same weights


def test_cli_import_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bitsmith.engine.cli import main

    _checkpoint(tmp_path / "gptq", 4, 32, True, "gptq")
    assert main(["import", str(tmp_path / "gptq"), "--out", str(tmp_path / "m"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["exact"] == 14 and result["requantized"] == 0
    assert main(["inspect", str(tmp_path / "m"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format_counts"] == {"int4_g32_sym": 14}
    assert all(row["bpw"] == pytest.approx(4 + 16 / 32) for row in summary["layers"])  # codes + fp16 scale / 32
    assert summary["layers"][0]["shape"] == [64, 64] and summary["source"] == str(tmp_path / "gptq")
    assert main(["inspect", str(tmp_path / "m"), "--layers"]) == 0
    assert "model.layers.1.mlp.down_proj" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "nothing")]) == 2
    assert "not a Bitsmith model folder" in capsys.readouterr().out


def test_bad_checkpoints(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "g", 4, 32, True, "gptq")
    cfg_path = tmp_path / "g" / "config.json"
    config = json.loads(cfg_path.read_text())
    for change, error, match in [({"bits": 3}, UnsupportedModelError, "3-bit"),
                                 ({"quant_method": "awq"}, UnsupportedModelError, "not GPTQ"),
                                 ({"checkpoint_format": "marlin"}, UnsupportedModelError, "marlin")]:
        cfg_path.write_text(json.dumps({**config, "quantization_config": {**config["quantization_config"], **change}}))
        with pytest.raises(error, match=match):
            import_gptq(tmp_path / "g", tmp_path / "out")
    cfg_path.write_text(json.dumps({k: v for k, v in config.items() if k != "quantization_config"}))
    with pytest.raises(BadInputError, match="no GPTQ settings"):
        import_gptq(tmp_path / "g", tmp_path / "out")
    cfg_path.write_text(json.dumps(config))
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "g" / "model.safetensors"))
    del state["model.layers.0.self_attn.q_proj.qzeros"]
    save_file(state, str(tmp_path / "g" / "model.safetensors"))
    with pytest.raises(BadInputError, match="lacks 'qzeros'"):
        import_gptq(tmp_path / "g", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
