"""GGUF export end to end: llama.cpp loads the file and computes what the native model computes."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from chat_models import cache_root, quantize_some, smollm_tokenizer, tiny_model

from bitsmith.engine.errors import BadInputError, UnsupportedModelError
from bitsmith.engine.export.arch import qk_permutation
from bitsmith.engine.export.gguf import export_gguf
from bitsmith.engine.export.vocab import bpe_pre

pytest.importorskip("llama_cpp")
gguf = pytest.importorskip("gguf")


def _tensor(path: Path, name: str) -> np.ndarray:
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(path))
    t = next(t for t in reader.tensors if t.name == name)
    return dequantize(t.data, t.tensor_type).reshape(tuple(int(x) for x in reversed(t.shape.tolist())))


def _text_ids(tok, n: int) -> list[int]:  # noqa: ANN001
    from bitsmith.engine.data import stdlib_docstrings

    docs = list(stdlib_docstrings("heldout"))
    random.shuffle(docs)
    return tok("\n\n".join(docs[:40]))["input_ids"][:n]


@pytest.fixture(scope="module")
def exact_gguf(smollm_int4, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("export") / "smollm2-int4.gguf"
    return out, export_gguf(smollm_int4, out, "exact")


@pytest.mark.slow
def test_exact_export_keeps_every_code(exact_gguf, smollm_int4) -> None:
    from bitsmith.engine.quant.store import load_quantized

    path, report = exact_gguf
    assert report.linear_types == {"Q4_1": 210} and report.fallbacks == []
    assert report.tokenizer.startswith("gguf:")  # copied from the GGUF the model came from
    assert report.q4_1_max_abs_error <= 2.0**-10
    model = load_quantized(smollm_int4).model
    for block, hf, gg, heads in [(random.randrange(30), "self_attn.q_proj", "attn_q", 9),
                                 (random.randrange(30), "self_attn.k_proj", "attn_k", 3),
                                 (random.randrange(30), "mlp.down_proj", "ffn_down", None)]:
        want = model.get_submodule(f"model.layers.{block}.{hf}").dequantize().numpy()
        if heads:
            want = want[qk_permutation(want.shape[0], heads)]
        got = _tensor(path, f"blk.{block}.{gg}.weight")
        assert got.shape == want.shape and np.abs(got - want).max() <= 2.0**-10


@pytest.mark.slow
def test_llama_cpp_on_the_export_is_as_close_to_native_as_on_the_source_gguf(exact_gguf, smollm_int4,
                                                                               bundled_gguf, monkeypatch) -> None:
    from bitsmith.engine.eval.perplexity import perplexity as torch_ppl
    from bitsmith.engine.model import load_model
    from bitsmith.engine.runtime.llamacpp import LlamaCppBackend, perplexity
    from bitsmith.engine.runtime.native import NativeBackend

    path, _ = exact_gguf
    native = NativeBackend.load(str(smollm_int4), device="cpu")
    ids = _text_ids(native.tokenizer, 512)
    native_ppl = torch_ppl(native.model, torch.tensor(ids), window=256).ppl
    export_ppl, n = perplexity(LlamaCppBackend(path, n_ctx=256, logits_all=True), ids, 256)
    # the same comparison on the file Bitsmith started from (llama.cpp vs transformers on the same weights)
    monkeypatch.setenv("BITSMITH_HOME", str(cache_root() / "home"))  # where chat_models cached the conversion
    src_model, _ = load_model("bundled")
    source_ppl = torch_ppl(src_model, torch.tensor(ids), window=256).ppl
    source_cpp, _ = perplexity(LlamaCppBackend(bundled_gguf, n_ctx=256, logits_all=True), ids, 256)
    gap, ref_gap = abs(export_ppl / native_ppl - 1), abs(source_cpp / source_ppl - 1)
    print(f"native {native_ppl:.3f} export {export_ppl:.3f} (gap {gap:.2%}); source {source_ppl:.3f} "
          f"llama.cpp {source_cpp:.3f} (gap {ref_gap:.2%}) over {n} tokens")
    assert n == 510 and gap <= max(ref_gap, 0.01) + 0.01


@pytest.mark.slow
def test_a_chat_with_the_export(exact_gguf) -> None:
    from bitsmith.engine.runtime.llamacpp import LlamaCppBackend
    from bitsmith.engine.runtime.params import SamplingParams
    from bitsmith.engine.runtime.session import ChatSession

    backend = LlamaCppBackend(exact_gguf[0], n_ctx=512)
    assert backend.has_chat_template
    s = ChatSession(backend)
    answer = s.ask("What is 2 + 2?", SamplingParams(temperature=0, max_tokens=12))
    assert answer.strip() and s.last.completion_tokens <= 12


@pytest.mark.slow
def test_compact_export_refits_int2_rows_of_256_and_keeps_the_rest_exact(smollm_mixed, tmp_path: Path) -> None:
    from bitsmith.engine.runtime.llamacpp import LlamaCppBackend, perplexity

    layout = json.loads((smollm_mixed / "bitsmith.json").read_text())["layout"]
    int2_down = sum(1 for k, v in layout.items() if v == "int2_g64" and k.endswith("down_proj"))
    int2_other = sum(1 for k, v in layout.items() if v == "int2_g64" and not k.endswith("down_proj"))
    exact = export_gguf(smollm_mixed, tmp_path / "e.gguf", "exact")
    compact = export_gguf(smollm_mixed, tmp_path / "c.gguf", "compact")
    assert exact.linear_types == {"Q4_1": 210}
    assert compact.linear_types == {"Q4_1": 210 - int2_down, "Q2_K": int2_down}
    assert len(compact.fallbacks) == int2_other and all("576 inputs" in f for f in compact.fallbacks)
    assert compact.file_bytes < exact.file_bytes and 0 < compact.q2_k_rel_rmse < 0.1
    ids = _text_ids(smollm_tokenizer(), 256)
    e_ppl, _ = perplexity(LlamaCppBackend(tmp_path / "e.gguf", n_ctx=256, logits_all=True), ids, 256)
    c_ppl, _ = perplexity(LlamaCppBackend(tmp_path / "c.gguf", n_ctx=256, logits_all=True), ids, 256)
    assert np.isfinite(c_ppl) and c_ppl < 2 * e_ppl


@pytest.mark.slow
def test_tokenizer_built_from_hf_files_tokenizes_like_transformers(smollm_int4, tmp_path: Path) -> None:
    from bitsmith.engine.runtime.llamacpp import LlamaCppBackend

    folder = tmp_path / "no-source"
    shutil.copytree(smollm_int4, folder)
    meta = json.loads((folder / "bitsmith.json").read_text())
    meta["source"] = {}  # no GGUF to copy from: the exporter builds the vocabulary from tokenizer.json
    (folder / "bitsmith.json").write_text(json.dumps(meta))
    report = export_gguf(folder, tmp_path / "hf.gguf", "exact", verify_rows=0)
    assert report.tokenizer == "hf:gpt2"
    tok = smollm_tokenizer()
    assert bpe_pre(tok) == "smollm"  # the probe text and hash agree with llama.cpp's table
    backend = LlamaCppBackend(tmp_path / "hf.gguf", n_ctx=256)
    msgs = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Héllo there, what's 12+30? 🦙"}]
    assert backend.render(msgs) == tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True,
                                                           return_dict=False)
    assert backend.metadata["tokenizer.ggml.eos_token_id"] == str(tok.eos_token_id)


FAMILIES = [
    pytest.param("qwen2", {}, id="qwen2"),
    pytest.param("llama", {}, id="llama-untied", marks=pytest.mark.slow),
    pytest.param("llama", {"tie_word_embeddings": True,
                           "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": 256}},
                 id="llama3-rope", marks=pytest.mark.slow),
    pytest.param("qwen3", {}, id="qwen3", marks=pytest.mark.slow),
    pytest.param("gemma", {}, id="gemma", marks=pytest.mark.slow),
    pytest.param("gemma2", {}, id="gemma2", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("model_type, overrides", FAMILIES)
def test_each_family_computes_the_same_logits_in_llama_cpp(model_type: str, overrides: dict, tmp_path: Path) -> None:
    from bitsmith.engine.quant.store import save_quantized
    from bitsmith.engine.runtime.llamacpp import LlamaCppBackend

    tok = smollm_tokenizer()
    model = tiny_model(model_type, len(tok), **overrides)
    # 3-bit codes fit Q4_1's 4-bit ones: gate_proj exports exactly too
    quantize_some(model, {"q_proj": "int4_g128", "k_proj": "int4_g128", "down_proj": "int2_g64",
                          "gate_proj": "int3_g128"})
    save_quantized(model, tok, tmp_path / "m")
    report = export_gguf(tmp_path / "m", tmp_path / "m.gguf", "exact")
    assert report.linear_types["Q4_1"] == 8 and report.architecture == model_type
    backend = LlamaCppBackend(tmp_path / "m.gguf", n_ctx=128, logits_all=True)
    ids = torch.randint(0, len(tok), (48,)).tolist()
    got = backend.logits(ids)
    with torch.inference_mode():
        want = model(torch.tensor([ids])).logits[0].numpy()
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.999, cos.min()
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.9


def test_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="mode"):
        export_gguf(tmp_path / "any", tmp_path / "x.gguf", "tiny")
    with pytest.raises(BadInputError, match=".gguf"):
        export_gguf(tmp_path / "any", tmp_path / "x.bin")
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("gpt2", n_layer=1, n_embd=32, n_head=2, vocab_size=100)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "gpt2")
    smollm_tokenizer().save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        export_gguf(tmp_path / "gpt2", tmp_path / "g.gguf")
    assert not list(tmp_path.glob(".*.tmp-*"))  # nothing half-written is left behind


@pytest.mark.slow
def test_a_sentencepiece_style_vocabulary_tokenizes_like_transformers(tmp_path: Path) -> None:
    """Llama-2/Gemma-style BPE with byte fallback and "▁" word starts becomes a llama.cpp SPM vocabulary."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    from bitsmith.engine.data import stdlib_docstrings
    from bitsmith.engine.quant.store import save_quantized
    from bitsmith.engine.runtime.llamacpp import LlamaCppBackend

    docs = list(stdlib_docstrings("calib"))
    random.shuffle(docs)
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tk.train_from_iterator(docs[:300], trainers.BpeTrainer(vocab_size=1000, special_tokens=specials,
                                                           show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant:{% endif %}")
    model = tiny_model("llama", len(tok))
    quantize_some(model, {"q_proj": "int4_g128"})
    save_quantized(model, tok, tmp_path / "m")
    report = export_gguf(tmp_path / "m", tmp_path / "m.gguf", verify_rows=0)
    assert report.tokenizer == "hf:llama"
    backend = LlamaCppBackend(tmp_path / "m.gguf", n_ctx=256)
    for text in docs[300:330] + ["Héllo wörld 🦙 12345", "  two spaces", "tabs\tand\nnewlines"]:
        assert backend.llm.tokenize(text.encode(), add_bos=False) == tok(text, add_special_tokens=False)["input_ids"]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert backend.decode(ids) == tok.decode(ids)
    msgs = [{"role": "user", "content": "hi there"}]
    assert backend.render(msgs) == tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True,
                                                           return_dict=False)


@pytest.mark.slow
def test_a_model_without_chat_template_chats_as_a_plain_transcript(tmp_path: Path) -> None:
    import copy

    from bitsmith.engine.quant.store import save_quantized
    from bitsmith.engine.runtime.llamacpp import LlamaCppBackend
    from bitsmith.engine.runtime.native import NativeBackend
    from bitsmith.engine.runtime.params import SamplingParams
    from bitsmith.engine.runtime.session import ChatSession
    from bitsmith.engine.runtime.template import PLAIN_STOPS

    tok = copy.deepcopy(smollm_tokenizer())
    tok.chat_template = None
    model = tiny_model("llama", len(tok))
    quantize_some(model, {"up_proj": "int4_g128"})
    save_quantized(model, tok, tmp_path / "base")
    export_gguf(tmp_path / "base", tmp_path / "base.gguf", verify_rows=0)
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hello"}]
    backends = [NativeBackend.load(str(tmp_path / "base"), device="cpu"), LlamaCppBackend(tmp_path / "base.gguf")]
    prompts = []
    for backend in backends:
        assert not backend.has_chat_template and backend.default_stops == PLAIN_STOPS
        prompts.append(backend.render(msgs))
        s = ChatSession(backend, system="S")
        s.ask("Hello", SamplingParams(temperature=0, max_tokens=3))
        assert s.last.completion_tokens <= 3
    assert prompts[0] == prompts[1] == tok("S\n\nUser: Hello\nAssistant:", add_special_tokens=False)["input_ids"]
