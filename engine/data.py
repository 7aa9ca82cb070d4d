"""Text for calibration and evaluation: local files, and an offline default every Python install has.

The offline default is the docstrings of the standard library, read with `ast` (nothing is imported).
Modules are split into a calibration part and a held-out part by a stable hash of the module name,
so held-out text is never calibration text.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from bitsmith.engine.errors import BadInputError

_SKIP_TOP = {"test", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip", "pydoc_data", "site-packages"}


def _stdlib_files() -> list[Path]:
    """Standard-library source files in a stable order (tests and GUI toolkits left out)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    names = set(getattr(sys, "stdlib_module_names", ()))
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        top = rel.parts[0].removesuffix(".py")
        if top in _SKIP_TOP or (names and top not in names) or "test" in rel.parts[:-1]:
            continue
        files.append(path)
    return files


def _docstrings(path: Path) -> Iterator[str]:
    """Every module, class and function docstring of one source file."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 80:
                yield doc


def _is_heldout(module: str) -> bool:
    """A stable 1-in-5 split by module name."""
    return hashlib.sha256(module.encode()).digest()[0] % 5 == 0


@functools.lru_cache(maxsize=1)
def _stdlib_splits() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(calibration, held-out) docstring text; held-out drops any docstring that calibration also has."""
    root = Path(sysconfig.get_paths()["stdlib"])
    calib: list[str] = []
    held: list[str] = []
    for path in _stdlib_files():
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        (held if _is_heldout(module) else calib).extend(_docstrings(path))
    seen = set(calib)
    held = [d for d in dict.fromkeys(held) if d not in seen]
    return tuple(calib), tuple(held)


def stdlib_docstrings(split: str = "calib") -> tuple[str, ...]:
    """The docstrings of one split ("calib" or "heldout"); no held-out docstring is in calibration."""
    if split not in ("calib", "heldout"):
        raise ValueError(f"split must be 'calib' or 'heldout', got {split!r}")
    return _stdlib_splits()[split == "heldout"]


def stdlib_text(split: str = "calib") -> str:
    """Offline English text: standard-library docstrings; `split` is "calib" or "heldout" (disjoint)."""
    return "\n\n".join(stdlib_docstrings(split))


def load_text(source: str | Path) -> str:
    """Text from `stdlib[:calib|:heldout]`, a .txt/.md file, a .jsonl file (a "text" field) or a .parquet file."""
    src = str(source)
    if src in ("stdlib", "stdlib:calib"):
        return stdlib_text("calib")
    if src == "stdlib:heldout":
        return stdlib_text("heldout")
    path = Path(src)
    if not path.is_file():
        raise BadInputError(
            f"text source {src!r} is neither a file nor a known source",
            "give a .txt, .jsonl or .parquet file, or 'stdlib' / 'stdlib:heldout' for the offline default",
        )
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md", ".text", ""):
        text = path.read_text(encoding="utf-8", errors="replace")
    elif suffix == ".jsonl":
        text = "\n\n".join(_jsonl_texts(path))
    elif suffix == ".parquet":
        text = "\n\n".join(_parquet_texts(path))
    else:
        raise BadInputError(f"cannot read text from {path.name}: unknown file type", "use .txt, .jsonl or .parquet")
    if not text.strip():
        raise BadInputError(f"{path} holds no text", "give a file with real text in it")
    return text


def _jsonl_texts(path: Path) -> Iterator[str]:
    """The "text" (or "content") field of each JSON line; a bad line is an error naming its number."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(f"{path}:{lineno}: not valid JSON ({exc.msg})", "fix or remove that line") from exc
            text = row.get("text", row.get("content")) if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise BadInputError(f"{path}:{lineno}: no 'text' field", 'each line needs {"text": "..."}')
            yield text


def _parquet_texts(path: Path) -> Iterator[str]:
    """The "text" column of a parquet file (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise BadInputError("reading .parquet needs the pyarrow package", "pip install pyarrow") from exc
    table = pq.read_table(path)
    if "text" not in table.column_names:
        raise BadInputError(f"{path} has no 'text' column", f"columns are: {', '.join(table.column_names)}")
    yield from (t for t in table.column("text").to_pylist() if isinstance(t, str))


def token_windows(token_ids: list[int], n: int, length: int, seed: int = 0) -> list[list[int]]:
    """`n` windows of `length` tokens drawn at seeded random offsets: deterministic calibration samples."""
    import random

    if len(token_ids) < length:
        raise BadInputError(
            f"the text has {len(token_ids)} tokens, fewer than one sample of {length}",
            "give more text or a shorter sample length",
        )
    rng = random.Random(seed)
    starts = [rng.randrange(0, len(token_ids) - length + 1) for _ in range(n)]
    return [token_ids[s : s + length] for s in starts]
