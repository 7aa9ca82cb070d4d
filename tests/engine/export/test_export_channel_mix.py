"""GGUF export of channel-mix layers: exact mode writes their dequantized weight as F16, compact mode re-quantizes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from chat_models import smollm_tokenizer, tiny_model

from bitsmith.engine.export.arch import qk_permutation
from bitsmith.engine.export.gguf import export_gguf

gguf = pytest.importorskip("gguf")


def _tensor(path: Path, name: str) -> tuple[np.ndarray, str]:
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(path))
    t = next(t for t in reader.tensors if t.name == name)
    shape = tuple(int(x) for x in reversed(t.shape.tolist()))
    return dequantize(t.data, t.tensor_type).reshape(shape), t.tensor_type.name


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> tuple[Path, object]:
    from bitsmith.engine.quant.linear import QuantLinear
    from bitsmith.engine.quant.mix import parse_format
    from bitsmith.engine.quant.mixed_linear import ChannelMixLinear
    from bitsmith.engine.quant.store import save_quantized, set_submodule

    tok = smollm_tokenizer()
    model = tiny_model("llama", len(tok))  # hidden 256, intermediate 512
    for name, mod in list(model.named_modules()):
        if name.endswith(("q_proj", "down_proj")):  # q_proj: llama.cpp's row permutation applies too
            k = mod.in_features
            mix = parse_format(f"int4_g128:128+int2_g64:{k - 128}").with_perm(torch.randperm(k).tolist())
            set_submodule(model, name, ChannelMixLinear.from_linear(mod, mix, "rtn"))
        elif name.endswith(("k_proj", "v_proj")):
            set_submodule(model, name, QuantLinear.from_linear(mod, "int4_g128", "rtn"))
    folder = tmp_path_factory.mktemp("mixed") / "m"
    save_quantized(model, tok, folder)
    return folder, model


def test_exact_mode_writes_the_mix_as_its_dequantized_weight(mixed_folder, tmp_path: Path) -> None:
    folder, model = mixed_folder
    report = export_gguf(folder, tmp_path / "m.gguf", "exact")
    # 2 blocks of 2 mixes, 3 float linears and 2 INT4 ones, and the float lm_head
    assert report.linear_types == {"F16": 2 * 2 + 2 * 3 + 1, "Q4_1": 2 * 2}
    mixed = [f for f in report.fallbacks if "channel-mix" in f]
    assert len(mixed) == 4 and all("exact" in f for f in mixed)
    for block, hf, gg, heads in [(0, "self_attn.q_proj", "attn_q", 4), (1, "mlp.down_proj", "ffn_down", None)]:
        want = model.get_submodule(f"model.layers.{block}.{hf}").dequantize().numpy()
        if heads:
            want = want[qk_permutation(want.shape[0], heads)]
        got, kind = _tensor(tmp_path / "m.gguf", f"blk.{block}.{gg}.weight")
        assert kind == "F16" and got.shape == want.shape
        np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))


def test_compact_mode_requantizes_the_mix_to_its_higher_part(mixed_folder, tmp_path: Path) -> None:
    folder, model = mixed_folder
    report = export_gguf(folder, tmp_path / "c.gguf", "compact")
    assert report.linear_types == {"F16": 2 * 3 + 1, "Q4_1": 2 * 2 + 2 * 2}  # the mixes became INT4/g128 → Q4_1
    mixed = [f for f in report.fallbacks if "channel-mix" in f]
    assert len(mixed) == 4 and all("re-quantized to int4_g128" in f and "lossy" in f for f in mixed)
    want = model.get_submodule("model.layers.1.mlp.down_proj").dequantize().numpy()
    got, kind = _tensor(tmp_path / "c.gguf", "blk.1.ffn_down.weight")
    assert kind == "Q4_1"
    # lossy, but an INT4 re-fit of the mix stays far closer to it than the mix's own INT2 part is to the original
    rel = np.sqrt(((got - want) ** 2).mean() / (want**2).mean())
    assert 0 < rel < 0.1, rel  # seen ≈ 0.045
