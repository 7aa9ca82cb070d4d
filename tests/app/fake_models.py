"""Header-only Hugging Face repos with real models' shapes, for the fake Hub in app tests and screenshots."""

import json
import struct

SHAPES = {  # (layers, hidden, intermediate, heads, kv heads, vocab): Llama-3-8B and Llama-3-70B
    "acme/llama-8b-instruct": (32, 4096, 14336, 32, 8, 128256),
    "acme/llama-70b-instruct": (80, 8192, 28672, 64, 8, 128256),
}


def llama_files(layers: int, h: int, inter: int, heads: int, kv: int, vocab: int) -> dict[str, bytes]:
    """config.json and a header-only safetensors file declaring a real model's shapes (no weights needed: the
    fit check reads headers only)."""
    hd = h // heads
    shapes = {"model.embed_tokens.weight": [vocab, h], "model.norm.weight": [h], "lm_head.weight": [vocab, h]}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": [heads * hd, h], p + "self_attn.k_proj.weight": [kv * hd, h],
                       p + "self_attn.v_proj.weight": [kv * hd, h], p + "self_attn.o_proj.weight": [h, heads * hd],
                       p + "mlp.gate_proj.weight": [inter, h], p + "mlp.up_proj.weight": [inter, h],
                       p + "mlp.down_proj.weight": [h, inter], p + "input_layernorm.weight": [h],
                       p + "post_attention_layernorm.weight": [h]})
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
              "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 8192,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    return {"config.json": json.dumps(config).encode(), "model.safetensors": struct.pack("<Q", len(raw)) + raw}
