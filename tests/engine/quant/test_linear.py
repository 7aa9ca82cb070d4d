"""QuantLinear: forward equals the reference, state dict is the documented format, safetensors is exact."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from bitsmith.engine.quant import QuantLinear, parse_spec, quantize_weight
from bitsmith.engine.quant.bpw import layer_bits
from bitsmith.kernels import reference

SPECS = ["int4_g128", "int2_g64", "int2_g64_dq8", "int2_g64_dq4_zq4", "int4_g128_zf", "int8_g128", "int4_g128_sym",
         "int3_g128", "int3_g64_dq8"]


def _layer(name: str, k: int = 576, n: int = 48, bias: bool = False) -> QuantLinear:
    qw = quantize_weight(torch.randn(n, k) * 0.05, name)
    return QuantLinear.from_quantized(qw, torch.randn(n) if bias else None)


def _ref(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    spec = layer.spec
    return reference.matmul(x, layer.qweight, layer.scales, layer.zeros, spec.bits, spec.group_size, layer.in_features)


@pytest.mark.parametrize("name", SPECS)
def test_forward_matches_reference_fp32(name: str) -> None:
    layer = _layer(name, k=600)
    x = torch.randn(2, 3, 600)
    y = layer(x)
    assert y.shape == (2, 3, 48) and y.dtype == torch.float32
    torch.testing.assert_close(y, _ref(layer, x), rtol=1e-5, atol=1e-5)
    assert torch.equal(layer.dequantize(), reference.dequantize(
        layer.qweight, layer.scales, layer.zeros, layer.spec.bits, layer.spec.group_size, 600))


def test_forward_fp16_and_bias() -> None:
    layer = _layer("int4_g128", bias=True)
    x = torch.randn(5, 576).half()
    y = layer(x)
    assert y.dtype == torch.float16
    expected = _ref(layer, x).float() + layer.bias.float()
    torch.testing.assert_close(y.float(), expected, rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="expects 576"):
        layer(torch.randn(2, 575))


def test_gradient_reaches_the_input() -> None:
    layer = _layer("int2_g64_dq8")
    x = torch.randn(3, 576, requires_grad=True)
    dy = torch.randn(3, 48)
    layer(x).backward(dy)
    torch.testing.assert_close(x.grad, dy @ layer.dequantize(), rtol=1e-5, atol=1e-5)
    assert not any(b.requires_grad for b in layer.buffers())


def test_quantized_layer_is_close_to_the_float_layer() -> None:
    lin = torch.nn.Linear(576, 64)
    layer = QuantLinear.from_linear(lin, "int8_g128")
    x = torch.randn(4, 576)
    with torch.no_grad():
        assert float((layer(x) - lin(x)).abs().max()) < 0.02 * float(lin(x).abs().max())


@pytest.mark.parametrize(
    "name, keys",
    [
        ("int4_g128", {"qweight", "scales", "zero_codes"}),
        ("int2_g64_dq8", {"qweight", "scale_codes", "scale_meta", "zero_codes"}),
        ("int2_g64_dq4_zq4", {"qweight", "scale_codes", "scale_meta", "zero_codes", "zero_meta"}),
        ("int4_g128_zf", {"qweight", "scales", "zeros"}),
        ("int4_g128_sym", {"qweight", "scales"}),
    ],
)
def test_state_dict_keys(name: str, keys: set) -> None:
    assert set(_layer(name).state_dict()) == keys
    assert set(_layer(name, bias=True).state_dict()) == keys | {"bias"}


@pytest.mark.parametrize("name", SPECS)
def test_safetensors_round_trip_is_bit_exact(name: str, tmp_path) -> None:
    layer = _layer(name, bias=name == "int2_g64_dq8")
    path = tmp_path / "layer.safetensors"
    save_file(layer.state_dict(), str(path))
    loaded = QuantLinear.from_state_dict(load_file(str(path)), parse_spec(name), 576)
    assert torch.equal(loaded.scales, layer.scales) and torch.equal(loaded.zeros, layer.zeros)
    x = torch.randn(7, 576)
    assert torch.equal(loaded(x), layer(x))
    # load_state_dict into an existing module re-materializes its fp16 statistics as well
    has_bias = layer.bias is not None
    fresh = QuantLinear(576, 48, name, bias=has_bias, bias_dtype=layer.bias.dtype if has_bias else torch.float16)
    fresh.load_state_dict(load_file(str(path)))
    assert torch.equal(fresh(x), layer(x))


def test_from_state_dict_with_prefix_and_mismatches() -> None:
    layer = _layer("int2_g64_dq8")
    state = {f"model.layers.0.mlp.down_proj.{k}": v for k, v in layer.state_dict().items()}
    state["model.layers.0.mlp.down_proj.other.qweight"] = torch.zeros(1)  # a child's key is not ours
    got = QuantLinear.from_state_dict(state, "int2_g64_dq8", 576, prefix="model.layers.0.mlp.down_proj.")
    assert torch.equal(got.qweight, layer.qweight)
    with pytest.raises(ValueError, match="missing"):
        QuantLinear.from_state_dict(layer.state_dict(), "int2_g64", 576)
    with pytest.raises(ValueError, match="expects"):
        QuantLinear.from_state_dict(layer.state_dict(), "int2_g64_dq8", 640)


def test_dtype_conversions_keep_the_format() -> None:
    layer = _layer("int2_g64_dq8", bias=True)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.float()
    layer.to(torch.bfloat16)
    after = layer.state_dict()
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    assert layer.scales.dtype == torch.float16
    assert "spec=int2_g64_dq8" in repr(layer) and "bpw=" in repr(layer)


def test_three_bit_layer_matches_reference_and_stores_three_bits_per_code() -> None:
    layer = _layer("int3_g128", n=520)  # bit planes: 576 inputs in 54 words; 520 zero codes fill 17 units, 51 words
    assert layer.qweight.shape[0] == 54 and layer.zero_codes.shape == (5, 51)
    assert layer_bits(520, 576, layer.spec).total == sum(t.numel() * t.element_size() * 8
                                                         for t in layer.state_dict().values())
    x = torch.randn(3, layer.in_features)
    w = layer.dequantize().float()
    assert torch.allclose(layer(x).float(), x @ w.t() + (layer.bias if layer.bias is not None else 0), atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_matches_reference() -> None:
    layer = _layer("int4_g128").cuda()
    x = torch.randn(3, 576, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(layer(x).float(), _ref(layer, x).float(), rtol=2e-2, atol=2e-2)
