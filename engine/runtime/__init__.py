"""Chat runtime: generation with a preallocated KV cache, sampling, streaming text, chat sessions.

Two backends answer the same `ChatSession` API: the native one (engine/runtime/native.py: a Bitsmith
or Hugging Face model in torch, Triton kernels on NVIDIA) and llama-cpp-python on a GGUF file
(engine/runtime/llamacpp.py). `open_backend` (engine/runtime/backends.py) picks one for a model path.
Importing this package is light: torch is imported by the backends that need it.
"""

from .params import SamplingParams

__all__ = ["SamplingParams"]
