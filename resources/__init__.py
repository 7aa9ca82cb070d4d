"""Icons, style sheets, presets and chat templates shipped as package data."""

from importlib.resources import files
from pathlib import Path


def resource_path(name: str) -> Path:
    """Path of a bundled resource file, so callers never guess the install layout."""
    return Path(str(files(__name__).joinpath(name)))
