"""Bitsmith's Qt shell. Never imports torch: it talks to the engine through the job protocol."""
