"""A format-1 folder (3-bit codes ten to a word) loads with the same outputs as the model that wrote it."""

import json

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from bitsmith.engine.model import find_blocks
from bitsmith.engine.quant.legacy import unpack_v1_three_bit
from bitsmith.engine.quant.linear import QuantLinear
from bitsmith.engine.quant.pack import unpack_codes
from bitsmith.engine.quant.store import load_quantized, round_kept_, save_quantized, set_submodule

FORMATS = ("int3_g128", "int3_g64_dq8", "int4_g128")  # integer 3-bit zeros, 8-bit zero codes, not 3-bit


def _tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(100)} | {"<unk>": 100}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def _pack_v1(codes: torch.Tensor) -> torch.Tensor:
    """codes [R, C] -> format-1 words [ceil(C/10), R] (the old pack_codes at 3 bits, written out here)."""
    r, c = codes.shape
    words = -(-c // 10)
    padded = torch.nn.functional.pad(codes.to(torch.int64), (0, words * 10 - c)).view(r, words, 10)
    packed = (padded << (torch.arange(10) * 3)).sum(-1)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32).t().contiguous()


def test_v1_unpacker_inverts_the_old_packing() -> None:
    codes = torch.randint(0, 8, (7, 53))
    assert torch.equal(unpack_v1_three_bit(_pack_v1(codes), 53), codes.t())


def test_format_1_three_bit_folder_loads_with_identical_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=101, hidden_size=96, intermediate_size=200, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    i = 0
    for block in find_blocks(model):
        for name, lin in block.linears.items():
            set_submodule(model, f"{block.name}.{name}", QuantLinear.from_linear(lin, FORMATS[i % 3], "rtn"))
            i += 1
    round_kept_(model)
    ids = torch.randint(0, 101, (2, 17))
    with torch.no_grad():
        before = model(ids).logits
    out = save_quantized(model, _tokenizer(), tmp_path / "m")
    # rewrite the folder as format 1 wrote it
    state = load_file(str(out / "model.safetensors"))
    rewritten = 0
    for name, mod in model.named_modules():
        if isinstance(mod, QuantLinear) and mod.spec.bits == 3:
            state[f"{name}.qweight"] = _pack_v1(unpack_codes(mod.qweight, 3, mod.in_features))
            if mod.spec.integer_zeros:
                zeros = unpack_codes(mod.zero_codes.t().contiguous(), 3, mod.out_features)  # [G, N]
                state[f"{name}.zero_codes"] = _pack_v1(zeros).t().contiguous()
            rewritten += 1
    assert rewritten == 10
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    meta = json.loads((out / "bitsmith.json").read_text())
    meta["format_version"] = 1
    (out / "bitsmith.json").write_text(json.dumps(meta))
    loaded = load_quantized(out)
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, before)
