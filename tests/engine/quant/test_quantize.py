"""quantize_weight rejects bad weights with the layer's name and shape, and accepts any float dtype."""

import pytest
import torch

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.quant import QuantLinear, dequantize_weight, quantize_weight


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_name_the_layer(bad: float) -> None:
    w = torch.randn(8, 64)
    w[2, 5] = bad
    with pytest.raises(ValueError, match=r"model\.layers\.3\.mlp\.up_proj.*\(8, 64\).*non-finite") as info:
        quantize_weight(w, "int4_g128", name="model.layers.3.mlp.up_proj")
    assert isinstance(info.value, BadInputError) and info.value.hint


def test_from_linear_passes_the_name() -> None:
    lin = torch.nn.Linear(32, 8)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    with pytest.raises(BadInputError, match="q_proj"):
        QuantLinear.from_linear(lin, "int4_g128", name="q_proj")


@pytest.mark.parametrize(
    "weight, match",
    [
        (torch.randn(4, 4, 4), "2-D"),
        (torch.randn(64), "2-D"),
        (torch.zeros(0, 64), "empty"),
        (torch.ones(4, 64, dtype=torch.int32), "float"),
    ],
)
def test_bad_shapes_and_dtypes(weight: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        quantize_weight(weight, "int4_g128", name="lm_head")
    assert "lm_head" in str(info.value)


def test_bad_method_and_unknown_width() -> None:
    w = torch.randn(8, 64)
    with pytest.raises(ValueError, match="unknown quantization method"):
        quantize_weight(w, "int4_g128", method="gptq")
    with pytest.raises(ValueError, match="int5"):
        quantize_weight(w, "int5_g128", name="o_proj")
    with pytest.raises(ValueError, match="unknown quantization spec"):
        quantize_weight(w, "int4-g128")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_half_precision_weights(dtype: torch.dtype) -> None:
    w = (torch.randn(16, 200) * 0.03).to(dtype)
    qw = quantize_weight(w, "int4_g128", name="x")
    assert qw.qweight.dtype == torch.int32 and qw.scales.dtype == torch.float16
    assert (qw.out_features, qw.in_features) == (16, 200)
    err = (dequantize_weight(qw) - w.float()).abs()
    assert float(err.max()) <= 0.5 * float(qw.scales.float().max()) * 1.01
