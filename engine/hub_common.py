"""What the Hub client's modules share: endpoint, offline mode, the models folder, and error mapping.

The Hub client is built on huggingface_hub (2.x, httpx-based). huggingface_hub reads HF_ENDPOINT and
HF_HUB_OFFLINE once, at import; Bitsmith reads HF_ENDPOINT at each call (and passes it explicitly) and
follows huggingface_hub's own offline flag, so both always agree on whether the network may be used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bitsmith.engine.errors import BadInputError, BitsmithError, NetworkError

HUB_WEB = "https://huggingface.co"
TOKEN_HINT = (
    "set HF_TOKEN to a read token from https://huggingface.co/settings/tokens "
    "(or run `hf auth login`)"
)


def endpoint() -> str:
    """The Hub's base URL: HF_ENDPOINT if set now, else what huggingface_hub was configured with."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """Whether network access to the Hub is switched off (HF_HUB_OFFLINE=1 when huggingface_hub was imported)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def models_dir() -> Path:
    """Where Bitsmith keeps downloaded models (bitsmith.engine.paths: BITSMITH_MODELS_DIR or the data folder)."""
    from bitsmith.engine import paths

    return paths.models_dir()


def check_model_id(model_id: str) -> str:
    """Validate an `owner/name` Hub id and return it stripped; raise BadInputError with an example otherwise."""
    model_id = (model_id or "").strip()
    parts = model_id.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise BadInputError(
            f"'{model_id}' is not a Hub model id",
            hint="use the form owner/name, for example HuggingFaceTB/SmolLM2-135M-Instruct",
        )
    return model_id


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def translate(
    exc: BaseException, model_id: str, filename: str | None = None, token_sent: bool = False
) -> BitsmithError:
    """Turn a huggingface_hub / httpx error into a Bitsmith error a user can act on (never mentions the token)."""
    import httpx2
    from huggingface_hub import errors as hf

    if isinstance(exc, BitsmithError):
        return exc
    page = f"{HUB_WEB}/{model_id}"
    if isinstance(exc, hf.GatedRepoError):
        if token_sent and _status(exc) == 403:
            return NetworkError(
                f"{model_id} is gated and your token has not been granted access yet",
                hint=f"open {page}, accept the license with the account that owns the token, wait for approval "
                "if the authors review requests, then try again",
            )
        return NetworkError(
            f"{model_id} is gated: the Hub needs you to accept its license and to send your token",
            hint=f"open {page} and accept the license, then {TOKEN_HINT}",
        )
    if isinstance(exc, hf.RepositoryNotFoundError):
        hint = "check the spelling (owner/name, e.g. HuggingFaceTB/SmolLM2-135M-Instruct)"
        if not token_sent:
            hint += f"; if the model is private, {TOKEN_HINT}"
        return BadInputError(f"model {model_id} not found on the Hub", hint=hint)
    if isinstance(exc, hf.RevisionNotFoundError):
        return BadInputError(
            f"revision not found for {model_id}",
            hint=f"use a branch, tag or commit listed at {page}/tree/main, or leave --revision out",
        )
    if isinstance(exc, hf.RemoteEntryNotFoundError):
        return BadInputError(f"{filename or 'a file'} not found in {model_id}", hint=f"see the files at {page}")
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return NetworkError(
            f"offline mode is on (HF_HUB_OFFLINE=1): cannot reach the Hub for {model_id}",
            hint="unset HF_HUB_OFFLINE to use the network",
        )
    if isinstance(exc, hf.LocalEntryNotFoundError):
        return NetworkError(
            f"cannot reach the Hub for {model_id} and it is not in the local cache",
            hint="check your internet connection, proxy settings or HF_ENDPOINT, then try again",
        )
    status = _status(exc)
    if status == 429:
        return NetworkError("the Hub is rate-limiting requests", hint=f"wait a minute and try again; {TOKEN_HINT}")
    if status is not None and status >= 500:
        return NetworkError(f"the Hub answered with an error ({status})", hint="try again in a few minutes")
    if status in (401, 403):
        return NetworkError(
            f"the Hub refused access to {model_id} ({status})",
            hint=f"{TOKEN_HINT}; make sure the token can read this model",
        )
    if isinstance(exc, (httpx2.TransportError, ConnectionError, TimeoutError)):
        return NetworkError(
            f"cannot reach the Hub at {endpoint()} ({type(exc).__name__})",
            hint="check your internet connection, proxy settings or HF_ENDPOINT, then try again",
        )
    if isinstance(exc, hf.HfHubHTTPError):
        return NetworkError(f"the Hub answered with an error ({status}) for {model_id}", hint="try again later")
    return BitsmithError(f"{type(exc).__name__}: {exc}")


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean 'no network' (offline mode, refused or timed-out connections)."""
    import httpx2
    from huggingface_hub import errors as hf

    return isinstance(exc, (hf.OfflineModeIsEnabled, httpx2.TransportError, ConnectionError, TimeoutError))


@contextmanager
def hub_errors(model_id: str, filename: str | None = None, token: str | bool | None = None) -> Iterator[None]:
    """Re-raise huggingface_hub and network errors raised inside the block as Bitsmith errors."""
    try:
        yield
    except BitsmithError:
        raise
    except Exception as exc:  # translate() keeps anything it does not know as a generic BitsmithError
        raise translate(exc, model_id, filename, token_sent=token_was_sent(token)) from exc


def token_was_sent(token: str | bool | None) -> bool:
    """Whether a request made with `token` carries one (explicit, or HF_TOKEN / saved login)."""
    if token is False:
        return False
    if isinstance(token, str):
        return True
    from huggingface_hub import get_token

    return get_token() is not None
