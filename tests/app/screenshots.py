"""Render every page of the app offscreen to docs/screenshots/<page>.png (run by hand, not collected by pytest).

    QT_QPA_PLATFORM=offscreen python tests/app/screenshots.py [--out docs/screenshots] [--theme light|dark]

The chat page shows a real answer: the bundled SmolLM2 GGUF runs in a worker through llama.cpp. Everything
lives in a temporary BITSMITH_HOME, so the user's own chats and settings are never touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[2]


def _wait(app, until, timeout_s: float) -> bool:  # noqa: ANN001
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if until():
            return True
        time.sleep(0.02)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--theme", default="light", choices=("light", "dark"))
    parser.add_argument("--prompt", default="Write a Python function that returns the square of a number.")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="bitsmith-shots-")
    os.environ["BITSMITH_HOME"] = home

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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
