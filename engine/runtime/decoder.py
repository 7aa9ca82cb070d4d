"""Batch-1 incremental forward passes over a preallocated KV cache, with prompt-prefix reuse.

`CachedDecoder` wraps a Hugging Face causal LM (its QuantLinear layers included) and a transformers
`StaticCache` of `n_ctx` positions allocated once. `prefill(ids)` finds how much of `ids` the cache
already holds (the previous turn's prompt and answer), rewinds to that point and feeds only the rest,
in chunks of PREFILL_CHUNK tokens: those forwards have many rows, so QuantLinear takes the kernels' GEMM
path. `step(token)` feeds one token (the GEMV path on NVIDIA). On CUDA the step is captured once as a
CUDA graph and replayed, which removes the per-layer launch overhead that dominates batch-1 decoding;
if capture fails (an architecture whose forward syncs with the host) it falls back to eager steps.

The static cache keeps its fill level on the device (`cumulative_length` of each layer), so rewinding
is an in-place write and a replayed graph sees it. Sliding-window layers keep a host-side counter and a
ring buffer: for them a rewind means refilling from the start, and no graph is captured.

A graph needs fixed shapes, so attention there reads all `n_ctx` cached positions (masked). Without a
graph (CPU, Apple, or a failed capture) the cache layers are `_FilledStaticLayer`s: the same preallocated
tensors, but attention reads only the filled positions, which matters when n_ctx is much longer than
the conversation.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

PREFILL_CHUNK = 512  # prompt tokens per forward (engine/plan.py sizes chat activations with the same number)


def _filled_static_layer_class() -> type:
    """A transformers StaticLayer whose attention sees only the filled part of its preallocated tensors."""
    from transformers.cache_utils import StaticLayer

    class _FilledStaticLayer(StaticLayer):
        def __init__(self, max_cache_len: int, **kwargs: object) -> None:
            super().__init__(max_cache_len=max_cache_len, **kwargs)
            self.filled = 0

        def update(self, key_states, value_states, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
            keys, values = super().update(key_states, value_states, *args, **kwargs)
            self.filled += key_states.shape[-2]
            return keys[:, :, : self.filled], values[:, :, : self.filled]

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.filled + query_length, 0

        def reset(self) -> None:
            super().reset()
            self.filled = 0

    return _FilledStaticLayer


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class CachedDecoder:
    """Prefill and single-token steps of `model` over a KV cache of `n_ctx` positions (module docstring)."""

    def __init__(self, model: nn.Module, n_ctx: int, *, cuda_graph: bool = True, prefill_chunk: int = PREFILL_CHUNK,
                 trim_attention: bool | None = None):
        """`trim_attention` (default: when no graph is used) makes attention read only the filled positions."""
        from transformers import StaticCache

        if n_ctx < 2:
            raise ValueError(f"n_ctx must be at least 2, got {n_ctx}")
        self.model = model
        self.n_ctx = n_ctx
        self.device = next(model.parameters()).device
        self.prefill_chunk = max(int(prefill_chunk), 1)
        self.cache = StaticCache(config=model.config, max_cache_len=n_ctx)
        self.tokens: list[int] = []  # ids whose keys and values are in the cache, in order
        self.rewindable = all(self._plain_static(layer) for layer in self.cache.layers)
        self.use_graph = bool(cuda_graph) and self.device.type == "cuda" and self.rewindable
        if trim_attention is None:
            trim_attention = not self.use_graph
        if self.rewindable and trim_attention and not self.use_graph:
            filled = _filled_static_layer_class()
            self.cache.layers = [filled(max_cache_len=n_ctx) for _ in self.cache.layers]
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_failed = False
        self._ids_buf: torch.Tensor | None = None
        self._pos_buf: torch.Tensor | None = None
        self._logits_buf: torch.Tensor | None = None

    @staticmethod
    def _plain_static(layer: object) -> bool:
        from transformers.cache_utils import StaticLayer

        return type(layer) is StaticLayer or type(layer).__name__ == "_FilledStaticLayer"

    # -- cache bookkeeping ---------------------------------------------------------------------------
    def _set_length(self, n: int) -> None:
        """Make the cache hold the first n tokens of self.tokens (n <= len(self.tokens))."""
        if n == len(self.tokens):
            return
        if n == 0 or not self.rewindable:
            self.cache.reset()
            self.tokens = []
            return
        self._set_fill(n)
        del self.tokens[n:]

    @torch.inference_mode()
    def reset(self) -> None:
        """Empty the cache (the memory stays allocated)."""
        self.cache.reset()
        self.tokens = []

    # -- forwards ------------------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """Logits [vocab] of the last of `ids` [1, n], fed at positions start..start+n-1."""
        n = ids.shape[1]
        pos = torch.arange(start, start + n, device=self.device).unsqueeze(0)
        out = self.model(input_ids=ids, position_ids=pos, past_key_values=self.cache, use_cache=True,
                         logits_to_keep=1)
        return out.logits[0, -1]

    @torch.inference_mode()
    def prefill(self, ids: list[int], should_stop=None) -> torch.Tensor | None:  # noqa: ANN001 - Callable[[], bool]
        """Feed the prompt `ids` (reusing the cached prefix); return the logits that predict the next token.

        `should_stop()` is asked between chunks; when it says yes, the prefill ends early and returns None.
        """
        if not ids:
            raise ValueError("the prompt is empty")
        if len(ids) > self.n_ctx:
            raise ValueError(f"the prompt has {len(ids)} tokens; the KV cache holds {self.n_ctx}")
        keep = min(_common_prefix(self.tokens, ids), len(ids) - 1)  # at least one token must be fed for logits
        self._set_length(keep)
        keep = len(self.tokens)
        logits = None
        for begin in range(keep, len(ids), self.prefill_chunk):
            if should_stop is not None and begin > keep and should_stop():
                return None
            chunk = ids[begin : begin + self.prefill_chunk]
            t = torch.tensor([chunk], dtype=torch.long, device=self.device)
            logits = self._forward(t, begin)
            self.tokens.extend(chunk)
        return logits

    @torch.inference_mode()
    def step(self, token: int) -> torch.Tensor:
        """Feed one token after the cached ones; return the logits for the token after it."""
        pos = len(self.tokens)
        if pos >= self.n_ctx:
            raise ValueError(f"the KV cache is full ({self.n_ctx} tokens)")
        if self.use_graph and not self._graph_failed:
            logits = self._graph_step(token, pos)
            if logits is not None:
                self.tokens.append(int(token))
                return logits
        t = torch.tensor([[int(token)]], dtype=torch.long, device=self.device)
        logits = self._forward(t, pos)
        self.tokens.append(int(token))
        return logits

    # -- CUDA graph ----------------------------------------------------------------------------------
    def _graph_step(self, token: int, pos: int) -> torch.Tensor | None:
        if self._graph is None and not self._capture(pos):
            return None
        assert self._ids_buf is not None and self._pos_buf is not None and self._logits_buf is not None
        self._ids_buf.fill_(int(token))
        self._pos_buf.fill_(pos)
        self._graph.replay()
        return self._logits_buf.clone()

    def _capture(self, pos: int) -> bool:
        """Record one decode step as a CUDA graph (needs a filled cache: its tensors are allocated lazily)."""
        if pos == 0:
            return False  # nothing prefilled yet: the cache tensors do not exist
        try:
            self._ids_buf = torch.zeros((1, 1), dtype=torch.long, device=self.device)
            self._pos_buf = torch.full((1, 1), pos, dtype=torch.long, device=self.device)
            stream = torch.cuda.Stream(device=self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):  # warm-up: Triton compiles, cuBLAS picks its algorithms
                for _ in range(2):
                    self._set_fill(pos)
                    self._static_forward()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            self._set_fill(pos)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._logits_buf = self._static_forward()
            self._set_fill(pos)
            self._graph = graph
            log.info("decode step captured as a CUDA graph")
            return True
        except Exception as exc:  # noqa: BLE001 - any failure means: run eagerly
            log.warning("CUDA graph capture failed (%s: %s); decoding eagerly", type(exc).__name__, exc)
            self._graph_failed = True
            self._graph = None
            self._set_fill(pos)
            return False

    def _set_fill(self, n: int) -> None:
        for layer in self.cache.layers:
            if layer.is_initialized:
                layer.cumulative_length.fill_(n)
            if hasattr(layer, "filled"):
                layer.filled = n

    def _static_forward(self) -> torch.Tensor:
        out = self.model(input_ids=self._ids_buf, position_ids=self._pos_buf, past_key_values=self.cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[0, -1]
