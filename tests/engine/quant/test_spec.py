"""QuantSpec names, defaults, validation, and the torch-free import of spec/bpw."""

import subprocess
import sys

import pytest

from bitsmith.engine.quant.spec import INT2_G64, INT4_G128, PRESETS, QuantSpec, parse_spec


def test_presets_round_trip_through_their_names() -> None:
    assert "int4_g128" in PRESETS and "int2_g64" in PRESETS and "int8_g128" in PRESETS
    for name, spec in PRESETS.items():
        assert spec.name == name
        assert parse_spec(name) == spec
        assert QuantSpec.from_dict(spec.to_dict()) == spec


def test_base_formats_default_to_integer_zeros_and_fp16_scales() -> None:
    for spec, bits, group in [(INT4_G128, 4, 128), (INT2_G64, 2, 64)]:
        assert (spec.bits, spec.group_size, spec.scale_bits, spec.zero_bits) == (bits, group, 16, bits)
        assert spec.asymmetric and spec.integer_zeros and not spec.float_zeros and not spec.double_quant_zeros


@pytest.mark.parametrize(
    "name, fields",
    [
        ("int2_g64_dq8", dict(bits=2, group_size=64, scale_bits=8, zero_bits=2)),
        ("int2_g64_dq4", dict(bits=2, group_size=64, scale_bits=4, zero_bits=2)),
        ("int4_g128_zf", dict(bits=4, group_size=128, scale_bits=16, zero_bits=16)),
        ("int2_g64_dq8_zq4", dict(bits=2, group_size=64, scale_bits=8, zero_bits=4)),
        ("int4_g32_sym", dict(bits=4, group_size=32, asymmetric=False, zero_bits=0)),
        ("INT3_G128", dict(bits=3, group_size=128, zero_bits=3)),
    ],
)
def test_suffixes(name: str, fields: dict) -> None:
    spec = parse_spec(name)
    for key, value in fields.items():
        assert getattr(spec, key) == value, key
    assert parse_spec(spec.name) == spec


def test_suffix_kinds_of_zero_points() -> None:
    assert parse_spec("int2_g64_zq8").double_quant_zeros
    assert parse_spec("int4_g128_zf").float_zeros
    assert not parse_spec("int4_g128_sym").double_quant_zeros


@pytest.mark.parametrize(
    "name, match",
    [
        ("int5_g128", "unsupported weight width 5"),
        ("int4_g0", "group_size must be a positive"),
        ("q4_k_m", "unknown quantization spec"),
        ("int4_g128_dq6", "unsupported scale_bits 6"),
        ("int4_g128_zq4", "unsupported zero_bits 4"),
        ("int4_g128_zf_zq8", "two zero-point formats"),
        ("int4_g128_fast", "unknown suffix 'fast'"),
        ("int4_g128_dq8_dq4", "repeats"),
    ],
)
def test_bad_names_are_clear_errors(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_spec(name)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="group_size"):
        QuantSpec(bits=4, group_size=-8)
    with pytest.raises(ValueError, match="integer"):
        QuantSpec(bits=4.0, group_size=128)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="symmetric"):
        QuantSpec(bits=4, group_size=128, asymmetric=False, zero_bits=16)
    with pytest.raises(ValueError, match="unknown QuantSpec fields"):
        QuantSpec.from_dict({"bits": 4, "group_size": 128, "sym": True})


def test_three_bits_pack() -> None:
    spec = parse_spec("int3_g128")
    assert spec.packable and spec.maxq == 7
    spec.require_packable()


def test_spec_and_bpw_import_without_torch() -> None:
    code = (
        "import sys\n"
        "from bitsmith.engine.quant import parse_spec, layer_bits, model_bits\n"
        "import bitsmith.engine.quant.spec, bitsmith.engine.quant.bpw\n"
        "assert layer_bits(64, 64, parse_spec('int4_g128')).bpw > 4\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
