"""Where Bitsmith keeps its files: the platform's user data folder, or BITSMITH_HOME when set.

BITSMITH_HOME (a folder) overrides everything, for tests and portable installs: data, models and jobs
then all live under it. BITSMITH_MODELS_DIR moves only the models (the user may keep them on another
disk). Functions only compute paths; callers create the folders they write to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

APP_NAME = "Bitsmith"
HOME_ENV = "BITSMITH_HOME"
MODELS_ENV = "BITSMITH_MODELS_DIR"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """Bitsmith's data folder: BITSMITH_HOME if set, else the platform's per-user data folder."""
    home = _env(env).get(HOME_ENV)
    if home:
        return Path(home).expanduser().resolve()
    import platformdirs  # light, but only needed when no override is set

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def models_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where downloaded and produced models live: BITSMITH_MODELS_DIR, else <data dir>/models."""
    chosen = _env(env).get(MODELS_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    return data_dir(env) / "models"


def jobs_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder holding one sub-folder per job (request, log, state, resumable checkpoints)."""
    return data_dir(env) / "jobs"


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Re-creatable data (measurements, downloads in progress): <data dir>/cache."""
    return data_dir(env) / "cache"
