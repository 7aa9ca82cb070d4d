"""Render every page of the app to docs/screenshots/<page>.png under Xvfb (run by hand, not collected by pytest).

    xvfb-run -a -s "-screen 0 1920x1200x24" env QT_QPA_PLATFORM=xcb python tests/app/screenshots.py
        [--out docs/screenshots] [--theme light|dark] [--library FOLDER_OR_GGUF...] [--finetune-steps 8]

(QT_QPA_PLATFORM=offscreen needs no X server. Under Xvfb, Qt's xcb plugin needs Debian's xvfb, libxcb-cursor0,
libxcb-icccm4 and libxcb-keysyms1.) The committed pictures: a demo quantize of the bundled model at 3.0 bpw passed
with --library, and --finetune-steps 8, once per theme.

The chat page shows a real answer: the bundled SmolLM2 GGUF runs in a worker through llama.cpp. The Models page
searches the local fake Hub (tests/engine/hub_server.py) serving header-only repos with real models' shapes, so
its fit badges are the planner's real verdicts. `--library PATH...` copies model folders or .gguf files (e.g. a
demo quantize's output) into the models folder first, and the bundled GGUF is added with Import GGUF. The
Fine-tune page previews a small instruction set made from the docstrings of Python's builtins, formatted for the
library's first quantized model; `--finetune-steps N` also runs N real Q-SFT steps on it, so the loss chart and log
show a real run. Everything lives in a temporary BITSMITH_HOME, so the user's own chats and settings are never
touched.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[2]


def _wait(app, until, timeout_s: float) -> bool:  # noqa: ANN001
    """Run the event loop until `until()` is true or `timeout_s` passes. A QEventLoop rather than processEvents() in
    a Python loop: with PySide6 6.12 on CPython 3.11 every such call drops a reference to None, and minutes of
    polling ended the process ("none_dealloc")."""
    from PySide6.QtCore import QEventLoop, QTimer

    if until():
        return True
    loop = QEventLoop()
    poll, deadline = QTimer(), QTimer()
    poll.setInterval(50)
    poll.timeout.connect(lambda: until() and loop.quit())
    deadline.setSingleShot(True)
    deadline.setInterval(int(timeout_s * 1000))
    deadline.timeout.connect(loop.quit)
    poll.start()
    deadline.start()
    loop.exec()
    poll.stop()
    deadline.stop()
    return bool(until())


def _load(name: str, path: Path):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def start_fake_hub():  # noqa: ANN201
    """The fake Hub with a few repos shaped like real models; HF_ENDPOINT points at it."""
    hub_server = _load("bitsmith_shots_hub_server", ROOT / "tests" / "engine" / "hub_server.py")
    fake_models = _load("bitsmith_shots_fake_models", ROOT / "tests" / "app" / "fake_models.py")
    hub = hub_server.FakeHub()
    repos = {**fake_models.SHAPES,
             "acme/llama-3b-instruct": (28, 3072, 8192, 24, 8, 128256),
             "acme/llama-1b-instruct": (16, 2048, 8192, 32, 8, 128256)}
    for i, (repo, shape) in enumerate(repos.items()):
        hub.add(repo, fake_models.llama_files(*shape), downloads=90_000 // (i + 1), license="llama3.1")
    hub.start()
    os.environ["HF_ENDPOINT"] = hub.url
    os.environ["HF_HUB_OFFLINE"] = "0"
    return hub


def bundled_gguf() -> Path | None:
    """The bundled SmolLM2 GGUF file, if its package is installed."""
    from bitsmith.app.chat.models import bundled_path

    return bundled_path()


def write_dataset(path: Path) -> Path:
    """A small instruction set from real text this machine has: what Python's builtins do, from their docstrings."""
    import builtins
    import json

    rows = []
    for name in sorted(dir(builtins)):
        obj = getattr(builtins, name)
        doc = (getattr(obj, "__doc__", None) or "").strip()
        if name.startswith("_") or not callable(obj) or not doc or isinstance(obj, type) and issubclass(
                obj, BaseException):
            continue
        summary = " ".join(doc.split("\n\n", 1)[0].split())
        rows.append({"instruction": f"What does Python's built-in {name}() do?", "input": "", "output": summary})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def finetune(app, window, home: Path, steps: int) -> None:  # noqa: ANN001
    """The Fine-tune page on the library's first quantized model: a dataset previewed, and `steps` real steps run."""
    page = window.page("finetune")
    window.show_page("finetune")
    if page.model_combo.currentData() is None:
        return
    data = write_dataset(home / "python-builtins.jsonl")
    page.data_edit.setText(str(data))
    page.update_preview()
    if not _wait(app, lambda: page.preview_box.preview is not None or page.preview_box.error is not None, 120):
        print("the dataset preview did not come within 120 s", file=sys.stderr)
    if steps <= 0:
        return
    page.steps_spin.setValue(steps)
    page.seq_spin.setValue(128)
    page.start()
    if not _wait(app, lambda: page.job is not None and not page.job.running, 900):
        print(f"the {steps}-step fine-tune did not finish within 900 s", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--theme", default="light", choices=("light", "dark"))
    parser.add_argument("--prompt", default="Write a Python function that returns the square of a number.")
    parser.add_argument("--library", nargs="*", default=[], help="model folders or .gguf files to show")
    parser.add_argument("--finetune-steps", type=int, default=0,
                        help="run this many Q-SFT steps on the library's first quantized model (0: preview only)")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="bitsmith-shots-")
    os.environ["BITSMITH_HOME"] = home
    models_dir = Path(home) / "models"
    models_dir.mkdir(parents=True)
    for item in map(Path, args.library):
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, models_dir / item.name)
    hub = start_fake_hub()

    from PySide6.QtWidgets import QApplication

    from bitsmith.app.services import Services
    from bitsmith.app.theme import apply_theme
    from bitsmith.app.window import PAGES, MainWindow

    app = QApplication([sys.argv[0]])
    services = Services()
    services.settings.set("theme", args.theme)
    apply_theme(app, args.theme)
    window = MainWindow(services)
    window.resize(1280, 820)
    window.show()
    services.hardware.start()
    _wait(app, lambda: services.hardware.profile is not None, 30)

    chat = window.page("chat")
    window.show_page("chat")
    chat.system_edit.setPlainText("You are a helpful assistant. Answer briefly.")
    chat.temperature.setValue(0.0)
    chat.max_tokens.setValue(160)
    chat.backend_combo.setCurrentIndex(chat.backend_combo.findData("llama.cpp"))
    chat._save_settings()
    chat.input.setPlainText(args.prompt)
    chat.send()
    if not _wait(app, lambda: not chat.controller.busy, 300):
        print("the answer did not finish within 300 s", file=sys.stderr)
    _wait(app, lambda: False, 0.3)

    finetune(app, window, Path(home), args.finetune_steps)

    quantize = window.page("quantize")  # the wizard at its budget step, for the bundled model
    window.show_page("quantize")
    quantize.next()
    if not _wait(app, lambda: quantize.step() == 1, 60):
        print("the bundled model's shape could not be read within 60 s", file=sys.stderr)
    quantize.next()
    quantize.preset_buttons[2.5].click()
    quantize.advanced.toggle.setChecked(True)  # the layout search and loading choices, at their defaults

    models = window.page("models")  # a search as a user would type it, with fit badges for this machine
    window.show_page("models")
    bundled = bundled_gguf()
    if bundled is not None:  # Import GGUF, as a user would add a file they have
        models.import_gguf(str(bundled))
        _wait(app, lambda: not models.importing, 120)
    models.search_edit.setText("llama")
    _wait(app, lambda: models.hub_table.rowCount() > 0 and not models.searching, 60)
    models.hub_table.selectRow(0)  # the details pane: the card, files and fit of the first result
    _wait(app, lambda: bool(models.details.model_id) and not models.details.loading, 30)
    if models.library:
        models.lib_table.selectRow(0)
    window.page("jobs").show_probes.setChecked(False)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.theme == "light" else "-dark"
    for name, _label in PAGES:
        window.show_page(name)
        _wait(app, lambda: False, 0.3)
        path = out / f"{name}{suffix}.png"
        window.grab().save(str(path))
        print(path)
    window.close()
    hub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
