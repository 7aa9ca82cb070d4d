"""bpw accounting equals the bytes a QuantLinear really stores, and reaches the product's targets."""

import pytest
import torch

from bitsmith.engine.quant import QuantLinear, layer_bits, model_bits, parse_spec, quantize_weight

SPECS = ["int4_g128", "int2_g64", "int8_g128", "int2_g64_dq8", "int2_g64_dq4", "int4_g128_dq8",
         "int4_g128_zf", "int2_g64_zq8", "int2_g64_dq4_zq4", "int4_g128_sym", "int3_g128", "int3_g128_dq8_zq4"]


def _stored_bits(layer: QuantLinear) -> tuple[int, int]:
    sd = layer.state_dict()
    bias = sd.pop("bias", None)
    total = sum(t.numel() * t.element_size() * 8 for t in sd.values())
    return total, 0 if bias is None else bias.numel() * bias.element_size() * 8


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("k", [576, 1536, 4096, 1000])
def test_accounting_matches_stored_bytes(name: str, k: int) -> None:
    n = 40  # not a multiple of 16: statistic codes packed along N need padding
    spec = parse_spec(name)
    w = torch.randn(n, k)
    bias = torch.randn(n).half() if k == 576 else None
    layer = QuantLinear.from_quantized(quantize_weight(w, spec), bias)
    stored, bias_bits = _stored_bits(layer)
    acc = layer_bits(n, k, spec, bias_bits=16 if bias is not None else 0)
    assert acc.total == stored
    assert acc.bias == bias_bits
    assert layer.bpw == pytest.approx(stored / (n * k))


def test_targets_for_two_bit_budgets() -> None:
    n = k = 4096
    assert layer_bits(n, k, parse_spec("int4_g128")).bpw == pytest.approx(4 + 20 / 128)
    assert layer_bits(n, k, parse_spec("int2_g64")).bpw == pytest.approx(2 + 18 / 64)
    dq8 = layer_bits(n, k, parse_spec("int2_g64_dq8")).bpw
    dq4 = layer_bits(n, k, parse_spec("int2_g64_dq4")).bpw
    assert 2.15 < dq8 < 2.17
    assert 2.09 < dq4 < 2.11
    # the same formats on SmolLM2's hidden size pay more for the per-row second-level stats
    assert layer_bits(576, 576, parse_spec("int2_g64_dq8")).bpw < 2.22


def test_permutation_and_bias_are_counted_separately() -> None:
    spec = parse_spec("int4_g128")
    base = layer_bits(64, 256, spec)
    with_perm = layer_bits(64, 256, spec, perm_bits=16, bias_bits=32)
    assert with_perm.total - base.total == 16 * 256
    assert with_perm.bias == 32 * 64 and base.bias == 0
    with pytest.raises(ValueError, match="perm_bits"):
        layer_bits(64, 256, spec, perm_bits=8)
    with pytest.raises(ValueError, match="positive"):
        layer_bits(0, 256, spec)


def test_model_report() -> None:
    s4, s2 = parse_spec("int4_g128"), parse_spec("int2_g64_dq8")
    layers = [("q_proj", 576, 576, s4), ("down_proj", 576, 1536, s2)]
    kept = [("embed_tokens", 49152 * 576), ("norm", 576)]
    rep = model_bits(layers, kept, biased={"q_proj"})
    a, b = layer_bits(576, 576, s4), layer_bits(576, 1536, s2)
    assert rep.quantized_bits == a.total + b.total
    assert rep.bpw == pytest.approx((a.total + b.total) / (576 * 576 + 576 * 1536))
    assert rep.bias_bits == 576 * 16
    assert rep.kept_16bit == ["embed_tokens", "norm"]
    assert rep.total_bits == a.total + b.total + 576 * 16 + 16 * (49152 * 576 + 576)
    assert rep.total_bytes * 8 >= rep.total_bits
    assert 2 < rep.bpw < 4.2 and rep.overall_bpw > rep.bpw  # 16-bit embeddings raise the overall figure
    d = rep.to_dict()
    assert d["kept_16bit"] == ["embed_tokens", "norm"] and len(d["layers"]) == 2
    assert "embed_tokens" in rep.summary()
