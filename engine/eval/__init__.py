"""Evaluation: perplexity over a text source, and (later) zero-shot task bridges."""
