"""Exporting Bitsmith models to other runtimes' formats (GGUF for llama.cpp: engine/export/gguf.py)."""
