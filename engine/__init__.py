"""Bitsmith's engine: quantization, fine-tuning and the runtime. Never imports Qt."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bitsmith")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
