"""The embedded demo: quantize the bundled SmolLM2-135M-Instruct at a mixed budget and chat with it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEMO_PROMPTS = (
    "What is the capital of France?",
    "Give me three tips for staying focused while studying.",
    "Write a Python function that returns the square of a number.",
)


@torch.no_grad()
def chat_answers(model: torch.nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int = 64) -> list[str]:
    """Greedy answers to single-turn prompts through the model's own chat template."""
    from bitsmith.engine.quant.dense import dense_copy

    fast = dense_copy(model).eval()
    answers = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, return_tensors="pt")
        out = fast.generate(
            **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
        answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return answers
