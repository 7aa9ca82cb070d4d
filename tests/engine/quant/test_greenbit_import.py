"""GreenBitAI layer-mix models (built here in bitorch-engine's MBWQLinear layout by this test's own packer) import
with the same codes and scales, weights within fp16 rounding of GreenBitAI's fp16(s·q − z), and logits to match;
permuted / channel-scaled layers are re-quantized and counted; bad folders get clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.quant.greenbit_import import import_greenbit
from bitsmith.engine.quant.linear import QuantLinear
from bitsmith.engine.quant.store import load_quantized

LINEARS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
# layer-mix: (bits, group) per block and linear; down_proj's 96 inputs in groups of 64 leave a short last group
MIX = [
    {"q_proj": (4, 32), "k_proj": (4, 32), "v_proj": (4, 64), "o_proj": (4, 32),
     "gate_proj": (2, 32), "up_proj": (2, 32), "down_proj": (2, 64)},
    {"q_proj": (2, 32), "k_proj": (2, 64), "v_proj": (4, 32), "o_proj": (8, 32),
     "gate_proj": (4, 64), "up_proj": (4, 32), "down_proj": (4, 32)},
]
DQ = 32  # GreenBitAI's dq_group_size: outputs sharing one second-level (offset, step)


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """MBWQLinear's qweight: codes [N, K] -> int32 [K·b/32, N]; code k sits at bits (k mod p)·b of word k // p."""
    p = 32 // bits
    n, k = codes.shape
    assert k % p == 0
    c = codes.T.reshape(k // p, p, n).astype(np.uint64)
    words = np.zeros((k // p, n), dtype=np.uint64)
    for j in range(p):
        words |= c[:, j, :] << np.uint64(bits * j)
    return words.astype(np.uint32).view(np.int32)


def _double_quantize(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """4-bit affine codes of statistics [G, N] per block of DQ outputs: (codes, offset, step, fp16 decoded)."""
    g, n = v.shape
    blocks = v.reshape(g, n // DQ, DQ).float()
    lo, hi = blocks.amin(-1, keepdim=True), blocks.amax(-1, keepdim=True)
    step = ((hi - lo) / 15).clamp_min(1e-4).half()
    off = (-lo / step.float()).half()
    codes = torch.clamp(torch.round(blocks / step.float() + off.float()), 0, 15).to(torch.uint8)
    decoded = ((codes.half() - off) * step).reshape(g, n)  # GreenBitAI decodes in fp16 arithmetic
    return codes, off, step, decoded


def _greenbit_layer(w: torch.Tensor, bits: int, group: int, mode: str, bias: torch.Tensor | None,
                    permute: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A linear's tensors as MBWQLinearCuda(use_mbw=False) stores them, and the weight its kernels compute."""
    n, k = w.shape
    maxq, half = (1 << bits) - 1, 1 << (bits - 1)
    perm, cs = torch.arange(k), torch.ones(k, dtype=torch.float16)
    if permute:
        perm, cs = torch.randperm(k), (1 + 0.2 * torch.rand(k)).half()
    stored_w = w[:, perm] / cs[perm].float()  # stored row j meets input perm[j], already scaled by cs
    gk = torch.arange(k) // group
    groups = -(-k // group)
    lo = torch.stack([stored_w[:, gk == g].amin(1) for g in range(groups)])  # [G, N]
    hi = torch.stack([stored_w[:, gk == g].amax(1) for g in range(groups)])
    s = ((hi - lo) / maxq).clamp_min(1e-5)
    if mode == "sym":
        s = (torch.maximum(lo.abs(), hi.abs()) / half).clamp_min(1e-5).half()
        z = (s.double() * half).half()
    elif mode == "int":
        s = s.half()
        z = (torch.clamp(torch.round(-lo / s.float()), 0, maxq).double() * s.double()).half()
    else:
        s, z = s.half(), (-lo).half()
    tensors: dict[str, torch.Tensor] = {
        "qweight": None, "g_idx": gk.to(torch.int32), "wf": torch.arange(0, 32, bits, dtype=torch.int32)[None],
        "q_perm": perm.to(torch.int16) if permute else torch.zeros(k, dtype=torch.int16),
        "channel_scale": cs.view(1, 1, k),
        "bias": bias.half() if bias is not None else torch.zeros(n, dtype=torch.float16),
    }
    if mode == "dq":
        qs, s_off, s_step, s = _double_quantize(s)
        qz, z_off, z_step, z = _double_quantize(z)
        tensors |= {"qstatistic": (qs << 4) | qz, "qscales_zeros": s_off, "qscales_scales": s_step,
                    "qzeros_zeros": z_off, "qzeros_scales": z_step}
    else:  # the double-quantization buffers MBWQLinear also saves, left at their initial values
        shape = (groups, n // DQ, 1)
        tensors |= {"scales": s, "zeros": z, "qstatistic": torch.ones(groups, n // DQ, DQ, dtype=torch.uint8),
                    "qscales_zeros": torch.zeros(shape, dtype=torch.float16),
                    "qscales_scales": torch.ones(shape, dtype=torch.float16),
                    "qzeros_zeros": torch.zeros(shape, dtype=torch.float16),
                    "qzeros_scales": torch.ones(shape, dtype=torch.float16)}
    s_k, z_k = s.double()[gk].t(), z.double()[gk].t()
    codes = torch.clamp(torch.round((stored_w.double() + z_k) / s_k), 0, maxq).long()  # GreenBitAI's packing rule
    tensors["qweight"] = torch.from_numpy(_pack(codes.numpy(), bits))
    stored_meant = (codes.double() * s_k - z_k).half().float()  # one fused multiply-add, rounded to fp16
    meant = torch.empty_like(stored_meant)
    meant[:, perm] = stored_meant * cs[perm].float()
    return tensors, meant


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {f"t{i}": i for i in range(100)} | {"<unk>": 100}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def _strategy() -> dict:
    return {"measurement": {
        f"model.layers.{i}": {name: {"bits": [b], "bits_prop": [1], "group_size": {str(b): g}, "scale_bits": 4}
                              for name, (b, g) in block.items()}
        for i, block in enumerate(MIX)}}


def _checkpoint(folder: Path, mode: str = "float", arch: str = "llama",
                permuted: tuple[str, ...] = ()) -> torch.nn.Module:
    """Write a GreenBitAI layer-mix folder of a random tiny model; return the fp32 model its kernels compute."""
    torch.manual_seed(torch.seed() % 2**31)
    kw = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    model = (Qwen2ForCausalLM(Qwen2Config(**kw)) if arch == "qwen2" else LlamaForCausalLM(LlamaConfig(**kw))).eval()
    model.half().float()  # GreenBitAI keeps embeddings, norms and lm_head in fp16
    state = {k: v.half() for k, v in model.state_dict().items()}
    for i, block in enumerate(MIX):
        for name, (bits, group) in block.items():
            prefix = f"model.layers.{i}.{LINEARS[name]}.{name}"
            lin = model.get_submodule(prefix)
            tensors, meant = _greenbit_layer(lin.weight.detach(), bits, group, mode, lin.bias, name in permuted)
            del state[prefix + ".weight"]
            state.pop(prefix + ".bias", None)
            state |= {f"{prefix}.{k}": v.contiguous() for k, v in tensors.items()}
            with torch.no_grad():
                lin.weight.copy_(meant)
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    model.config.save_pretrained(folder)
    (folder / "quant_strategy.json").write_text(json.dumps(_strategy()))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _tokenizer().save_pretrained(folder)
    return model


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()


def _zeros_of(folder: Path, prefix: str, in_features: int, group: int) -> torch.Tensor:
    """|z| per weight element of a layer (fp16 zeros; the bound below scales with it)."""
    from safetensors.torch import load_file

    z = load_file(str(folder / "model.safetensors")).get(prefix + ".zeros")
    return z.float().abs()[torch.arange(in_features) // group].t()


@pytest.mark.parametrize("mode,arch,expect", [
    ("float", "llama", "_zf"),     # zeros are arbitrary floats: nearest format, fp16 z/s
    ("int", "llama", ""),          # z = fp16(z0·s): integer zero-points, exact
    ("sym", "llama", "_sym"),      # z = 2^(b-1)·s everywhere
    ("dq", "llama", "_zf"),        # double-quantized statistics (qstatistic) decoded to fp16
    ("float", "qwen2", "_zf"),     # q/k/v carry a bias
])
def test_import_matches_greenbit(tmp_path: Path, mode: str, arch: str, expect: str) -> None:
    ref = _checkpoint(tmp_path / "gba", mode, arch)
    out, report = import_greenbit(tmp_path / "gba", tmp_path / "native")
    assert not report.requantized and len(report.formats) == 14
    layer_mix = {f"model.layers.{i}.{LINEARS[n]}.{n}": bg for i, block in enumerate(MIX) for n, bg in block.items()}
    assert report.formats == {p: f"int{b}_g{g}{expect}" for p, (b, g) in layer_mix.items()}
    if expect == "_zf":
        assert len(report.approximate) == 14 and not report.exact
    else:
        assert len(report.exact) == 14 and not report.approximate
    assert len(report.double_quantized) == (14 if mode == "dq" else 0)
    got = load_quantized(out).model
    worst = 0.0
    for prefix, (bits, group) in layer_mix.items():
        mod = got.get_submodule(prefix)
        assert isinstance(mod, QuantLinear) and mod.spec.bits == bits and mod.spec.group_size == group
        w_ref = ref.get_submodule(prefix).weight.detach()
        diff = (mod.dequantize() - w_ref).abs()
        if mode == "dq":  # zeros only in qstatistic: bound by the weight alone, plus one step of fp16 z/s
            bound = w_ref.abs() + w_ref.abs().amax()
        else:
            bound = w_ref.abs() + _zeros_of(tmp_path / "gba", prefix, mod.in_features, group)
        worst = max(worst, float((diff / (bound + 2**-14)).max()))
    assert worst <= 2**-10  # ulp(z/s)/2 · s + fp16's own rounding of w: within fp16 rounding
    assert report.to_dict()["max_weight_error"] < 2e-3
    ids = torch.randint(0, 101, (2, 13))
    err = (_logits(got, ids) - _logits(ref, ids)).norm() / _logits(ref, ids).norm()
    assert err < 3e-3  # fp16 rounding of GreenBitAI's weights (observed up to ~1e-3 over seeds)
    meta = json.loads((out / "bitsmith.json").read_text())
    assert meta["source"]["format"] == "greenbit" and meta["recipe"]["import"]["requantized"] == 0


def test_integer_zero_points_keep_codes_and_scales(tmp_path: Path) -> None:
    """Exact layers keep GreenBitAI's packed codes word for word and its fp16 scales bit for bit."""
    from safetensors.torch import load_file

    _checkpoint(tmp_path / "gba", "int")
    out, _ = import_greenbit(tmp_path / "gba", tmp_path / "native")
    src, dst = load_file(str(tmp_path / "gba" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for i, block in enumerate(MIX):
        for name in block:
            prefix = f"model.layers.{i}.{LINEARS[name]}.{name}"
            assert torch.equal(src[prefix + ".qweight"], dst[prefix + ".qweight"])
            assert torch.equal(src[prefix + ".scales"], dst[prefix + ".scales"])


def test_permutation_and_channel_scale_are_requantized(tmp_path: Path) -> None:
    ref = _checkpoint(tmp_path / "gba", "float", permuted=("q_proj", "down_proj"))
    out, report = import_greenbit(tmp_path / "gba", tmp_path / "native")
    assert sorted(report.requantized) == sorted(f"model.layers.{i}.{LINEARS[n]}.{n}"
                                                for i in range(2) for n in ("q_proj", "down_proj"))
    assert len(report.approximate) == 10
    ids = torch.randint(0, 101, (1, 9))
    err = (_logits(load_quantized(out).model, ids) - _logits(ref, ids)).norm() / _logits(ref, ids).norm()
    assert 1e-3 < err < 0.1  # lossy, but a faithful re-quantization of the permuted, scaled weights
    assert json.loads((out / "bitsmith.json").read_text())["recipe"]["import"]["requantized"] == 4


def test_cli_detects_greenbit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bitsmith.engine.cli import main
    from bitsmith.engine.pipeline.importing import detect_format

    _checkpoint(tmp_path / "gba", "int")
    assert detect_format(tmp_path / "gba") == "greenbit"
    assert main(["import", str(tmp_path / "gba"), "--out", str(tmp_path / "m"), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["format"] == "greenbit" and result["exact"] == 14 and result["requantized"] == 0
    assert any(json.loads(line).get("event") == "progress" for line in lines[:-1])
    assert main(["inspect", str(tmp_path / "m"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["format_counts"].values()) == 14 and "int8_g32" in summary["format_counts"]
    with pytest.raises(BadInputError, match="already a Bitsmith model"):
        detect_format(tmp_path / "m")
    assert main(["import", str(tmp_path / "gba"), "--out", str(tmp_path / "m2"), "--from", "gptq"]) == 2


def _rewrite_strategy(folder: Path, block: str, linear: str, entry: dict | None) -> None:
    path = folder / "quant_strategy.json"
    data = json.loads(path.read_text())
    if entry is None:
        del data["measurement"][block][linear]
    else:
        data["measurement"][block][linear] = entry
    path.write_text(json.dumps(data))


def test_bad_checkpoints(tmp_path: Path) -> None:
    from bitsmith.engine.pipeline.importing import detect_format

    src, out = tmp_path / "gba", tmp_path / "out"
    _checkpoint(src, "float")
    original = (src / "quant_strategy.json").read_text()
    cases = [
        ({"bits": [3], "bits_prop": [1], "group_size": {"3": 32}}, "3-bit codes"),
        ({"bits": [5], "bits_prop": [1], "group_size": {"5": 32}}, "5-bit codes"),
        ({"bits": [4, 2], "bits_prop": [0.5, 0.5], "group_size": {"4": 32, "2": 32}}, "channel-mix"),
        ({"bits": [2], "bits_prop": [1], "group_size": {"2": 32}}, "rows, but 64 inputs at 2 bits"),  # packed at 4
        ({"bits": [4], "bits_prop": [1], "group_size": {"4": 16}}, r"scales has shape \(2, 64\), expected \(4, 64\)"),
        (None, "no entry for the quantized layer 'model.layers.0.self_attn.q_proj'"),
    ]
    for entry, match in cases:
        (src / "quant_strategy.json").write_text(original)
        _rewrite_strategy(src, "model.layers.0", "q_proj", entry)
        with pytest.raises(BadInputError, match=match):
            import_greenbit(src, out)
    (src / "quant_strategy.json").unlink()
    assert detect_format(src) == "greenbit"  # its tensors say so; the importer then names what is missing
    with pytest.raises(BadInputError, match="no quant_strategy.json"):
        import_greenbit(src, out)
    (src / "quant_strategy.json").write_text(original)
    from safetensors.torch import load_file, save_file

    state = load_file(str(src / "model.safetensors"))
    for key in ("scales", "zeros", "qstatistic"):
        del state[f"model.layers.1.mlp.up_proj.{key}"]
    save_file(state, str(src / "model.safetensors"))
    with pytest.raises(BadInputError, match="neither fp16 scales/zeros nor the double-quantized"):
        import_greenbit(src, out)
    assert not out.exists()  # nothing half-written


def test_dead_group_with_offset_is_requantized() -> None:
    """A group with s = 0 but z != 0 means constant weights -z, which (q - z')·s cannot give: re-quantized."""
    from bitsmith.engine.quant.greenbit_import import LayerFormat, convert_layer

    w = torch.randn(32, 64)
    tensors, meant = _greenbit_layer(w, 4, 32, "float", None, False)
    tensors["scales"][1, :4] = 0.0  # group 1 of outputs 0..3: weights all equal -z there
    layer, how, err, dq = convert_layer(tensors, 64, LayerFormat(4, 32), "x")
    assert how == "requantized" and not dq and layer.spec.name == "int4_g32"
    tensors["scales"][1, :4] = 1.0
    layer, how, err, _ = convert_layer(tensors, 64, LayerFormat(4, 32), "x")
    assert how == "approximate" and err < 2e-3
