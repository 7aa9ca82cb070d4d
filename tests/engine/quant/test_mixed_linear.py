"""ChannelMixLinear: the permutation goes where it should, forward = dequantize then matmul, exact bits, round trips."""

import pytest
import torch

from bitsmith.engine.quant.bpw import channel_mix_bits, perm_bits_for
from bitsmith.engine.quant.mix import ChannelMix, format_key, format_label, format_layer_bits, parse_format
from bitsmith.engine.quant.mixed_linear import ChannelMixLinear, quant_modules
from bitsmith.engine.quant.spec import parse_spec


def _stored_bits(layer: torch.nn.Module) -> tuple[int, int]:
    sd = layer.state_dict()
    bias = sd.pop("bias", None)
    return sum(t.numel() * t.element_size() * 8 for t in sd.values()), 0 if bias is None else bias.numel() * 16


def _linear(w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.nn.Linear:
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def test_hand_made_two_part_example_puts_every_column_where_the_permutation_says() -> None:
    """Part 0 (int4, groups of 4) holds original inputs 5, 1, 7, 3; part 1 (int2, groups of 2) holds 0, 2, 4, 6.

    The weights sit exactly on each part's grid (every group spans its full code range from 0), so
    dequantization is exact and any misplaced column shows as an exact mismatch."""
    perm = [5, 1, 7, 3, 0, 2, 4, 6]
    w = torch.zeros(2, 8)
    w[:, [5, 1, 7, 3]] = torch.tensor([[0.0, 15.0, 3.0, 7.0], [15.0, 0.0, 9.0, 1.0]]) * 0.5  # int4 codes × 0.5
    w[:, [0, 2, 4, 6]] = torch.tensor([[0.0, 3.0, 3.0, 0.0], [3.0, 0.0, 0.0, 3.0]]) * 0.25  # int2 codes × 0.25
    mix = parse_format("int4_g4:4+int2_g2:4").with_perm(perm)
    layer = ChannelMixLinear.from_linear(_linear(w), mix, "rtn")
    assert layer.perm.dtype == torch.int16 and layer.perm.tolist() == perm
    assert torch.equal(layer.parts[0].dequantize(), w[:, [5, 1, 7, 3]])
    assert torch.equal(layer.parts[1].dequantize(), w[:, [0, 2, 4, 6]])
    assert torch.equal(layer.dequantize(), w)
    for j in range(8):  # a one-hot input reads back exactly column j
        x = torch.zeros(1, 8)
        x[0, j] = 1.0
        assert torch.equal(layer(x)[0], w[:, j])
    assert layer.mix_with_perm == mix and layer.mix_with_perm.perm == tuple(perm)


@pytest.mark.parametrize("name, k", [
    ("int4_g128:256+int2_g64:320", 576),  # the last part ends with a short group (SmolLM2's hidden size)
    ("int4_g128_dq8:128+int3_g128_dq8:256+int2_g64_dq8:616", 1000),
    ("int8_g128:128+int2_g64_sym:72", 200),
])
@pytest.mark.parametrize("bias_dtype", [None, torch.float16, torch.float32])
def test_forward_equals_dequantize_then_matmul(name: str, k: int, bias_dtype: torch.dtype | None) -> None:
    n = 40
    lin = _linear(torch.randn(n, k), None if bias_dtype is None else torch.randn(n))
    if bias_dtype is not None:
        lin.bias.data = lin.bias.data.to(bias_dtype)
    mix = parse_format(name).with_perm(torch.randperm(k).tolist())
    layer = ChannelMixLinear.from_linear(lin, mix, "hqq")
    x = torch.randn(3, 5, k, requires_grad=True)
    y = layer(x)
    want = x.detach() @ layer.dequantize().t() + (0 if layer.bias is None else layer.bias.float())
    assert y.shape == (3, 5, n)
    torch.testing.assert_close(y.detach(), want, rtol=1e-4, atol=1e-4)  # fp32: partial sums vs one dot product
    y.sum().backward()  # differentiable with respect to the input, as QuantLinear is
    torch.testing.assert_close(x.grad, layer.dequantize().sum(0).expand(3, 5, k), rtol=1e-4, atol=1e-4)
    # a quantized weight stays close to the original, column by column in the original order
    assert (layer.dequantize() - lin.weight).abs().mean() < 0.5 * lin.weight.abs().mean()
    assert layer.half().bias is None or layer.bias.dtype == (bias_dtype or torch.float16)  # the format fixes dtypes
    with pytest.raises(ValueError, match="features"):
        layer(torch.randn(2, k + 1))


@pytest.mark.parametrize("name, k", [
    ("int4_g128:256+int2_g64:320", 576), ("int4_g128_dq8:128+int2_g64_dq4_zq4:872", 1000),
    ("int3_g128:33024+int2_g64:64", 33088),  # wider than int16 can index: the permutation is stored as int32
])
def test_bits_formula_matches_the_state_dict(name: str, k: int) -> None:
    n = 40 if k < 10_000 else 4
    mix = parse_format(name)
    layer = ChannelMixLinear.from_linear(_linear(torch.randn(n, k), torch.randn(n)), mix, "rtn")
    stored, bias_bits = _stored_bits(layer)
    acc = format_layer_bits(mix, n, k, bias_bits=16)
    assert acc.total == stored and acc.bias == bias_bits == 16 * n
    assert acc.perm == perm_bits_for(k) * k and layer.perm.element_size() * 8 == perm_bits_for(k)
    assert acc.total == sum(p.total for p in acc.parts) + acc.perm
    assert layer.bpw == pytest.approx(stored / (n * k))
    assert acc.to_dict()["spec"] == name and len(acc.to_dict()["parts"]) == len(mix.specs)
    assert channel_mix_bits(n, list(zip(mix.specs, mix.widths))).total == acc.total


def test_state_dict_round_trips_bit_exactly_through_safetensors(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    k, n = 576, 24
    mix = parse_format("int4_g128_dq8:384+int2_g64:192").with_perm(torch.randperm(k).tolist())
    layer = ChannelMixLinear.from_linear(_linear(torch.randn(n, k), torch.randn(n)), mix, "hqq")
    save_file({f"blk.{key}": t.contiguous() for key, t in layer.state_dict().items()}, str(tmp_path / "m.st"))
    state = load_file(str(tmp_path / "m.st"))
    back = ChannelMixLinear.from_state_dict(state, mix.name, k, prefix="blk.")
    x = torch.randn(7, k)
    assert torch.equal(back(x), layer(x)) and torch.equal(back.dequantize(), layer.dequantize())
    assert back.perm.tolist() == list(mix.perm) and back.bias.dtype == torch.float32  # an fp32 bias stays fp32
    broken = dict(state)
    broken["blk.perm"] = torch.zeros(k, dtype=torch.int16)  # not a permutation
    with pytest.raises(ValueError, match="not a permutation"):
        ChannelMixLinear.from_state_dict(broken, mix, k, prefix="blk.")
    broken["blk.perm"] = state["blk.perm"].to(torch.int32)
    with pytest.raises(ValueError, match="perm"):
        ChannelMixLinear.from_state_dict(broken, mix, k, prefix="blk.")
    with pytest.raises(ValueError, match="unexpected"):
        ChannelMixLinear.from_state_dict({**state, "blk.parts.2.qweight": state["blk.parts.0.qweight"]}, mix, k,
                                         prefix="blk.")
    with pytest.raises(ValueError):  # the parts' tensors must fit the named formats
        ChannelMixLinear.from_state_dict(state, "int4_g128_dq8:256+int2_g64:320", k, prefix="blk.")


def test_format_names_parse_and_reject_what_cannot_be_stored() -> None:
    mix = parse_format("int4_g128:256+int2_g64_dq8:320")
    assert isinstance(mix, ChannelMix) and parse_format(mix.name) == mix
    assert mix.in_features == 576 and mix.slices == [(0, 256), (256, 576)]
    assert format_label(mix) == "int4_g128+int2_g64_dq8" and format_label("int4_g128") == "int4_g128"
    assert parse_format("int4_g128") == parse_spec("int4_g128")
    assert format_key(mix) == mix.name and format_key(mix.with_perm(range(576))) != mix.name
    assert mix.with_perm(list(range(576))) == mix  # the permutation is data, not part of the format
    for bad, why in [
        ("int4_g128:200+int2_g64:376", "whole number"),  # the first part would cut a group
        ("int4_g128:256", "two or more"),
        ("int4_g128:256+int2_g64", "parts"),
        ("int5_g128:128+int2_g64:64", "int5"),
        ("int4_g128:0+int2_g64:64", "positive"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_format(bad)
    with pytest.raises(ValueError, match="permutation"):
        mix.with_perm([0] * 576)
    with pytest.raises(ValueError, match="covers"):
        format_layer_bits(mix, 8, 577)


def test_quant_modules_lists_a_mix_once_and_not_its_parts() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(256, 8), torch.nn.Linear(8, 8))
    model[0] = ChannelMixLinear.from_linear(model[0], "int4_g128:128+int2_g64:128")
    found = quant_modules(model)
    assert list(found) == ["0"] and isinstance(found["0"], ChannelMixLinear)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("m", [1, 16, 200])  # the GEMV, split-K and GEMM paths of each part
def test_cuda_forward_runs_each_part_through_the_kernels(m: int) -> None:
    k, n = 4096, 512
    mix = parse_format("int4_g128:1024+int2_g64:3072").with_perm(torch.randperm(k).tolist())
    layer = ChannelMixLinear.from_linear(_linear(torch.randn(n, k), torch.randn(n)), mix, "rtn").cuda()
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    y = layer(x)
    want = x.float() @ layer.dequantize().t() + layer.bias.float()
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), want, rtol=2e-2, atol=0.3)
