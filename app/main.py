"""Start the desktop app: `python -m bitsmith.app` or the `bitsmith-app` launcher. A second launch for the same
user and data folder brings the running window to the front and exits (app/single_instance.py)."""

from __future__ import annotations

import argparse
import sys
import time

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options (Qt's own options are passed through to Qt)."""
    parser = argparse.ArgumentParser(prog="bitsmith-app", description="Bitsmith desktop app")
    parser.add_argument("--page", help="open this page first (models, quantize, finetune, chat, jobs, settings)")
    parser.add_argument("--exit-when-shown", action="store_true",
                        help="print the wall-clock time when the window is shown and usable, then quit (benchmark)")
    return parser.parse_known_args(argv)[0]


def _set_icon(app: QApplication) -> None:
    """The window icon from bitsmith.resources, when the install has it."""
    from pathlib import Path

    from PySide6.QtGui import QIcon

    import bitsmith.resources

    icon = Path(bitsmith.resources.__file__).parent / "bitsmith.png"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))


def main(argv: list[str] | None = None) -> int:
    """Build the application and the main window, then run the event loop."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    app = QApplication.instance() or QApplication([sys.argv[0], *argv])
    app.setApplicationName("Bitsmith")
    app.setOrganizationName("Bitsmith")
    app.setDesktopFileName("bitsmith")
    _set_icon(app)

    from bitsmith.engine import paths

    from .single_instance import SingleInstance, bring_to_front

    instance = SingleInstance(paths.data_dir())
    if not instance.acquire():  # another window owns this data folder: show it instead of opening a second
        return instance.hand_over({"page": args.page} if args.page else {})

    from .services import Services
    from .theme import apply_theme
    from .window import PAGES, MainWindow

    PAGE_NAMES = [name for name, _ in PAGES]  # noqa: N806 - a constant for this run

    services = Services()
    apply_theme(app, str(services.settings.get("theme", "system")))
    window = MainWindow(services)  # it follows the desktop's light/dark switches (theme.SystemThemeFollower)
    if args.page:
        if args.page in PAGE_NAMES:
            window.show_page(args.page)
        else:
            print(f"bitsmith-app: unknown page {args.page!r}; pages: {', '.join(PAGE_NAMES)}", file=sys.stderr)
    window.show()
    instance.activated.connect(lambda message: bring_to_front(window, message, PAGE_NAMES))
    QTimer.singleShot(0, services.hardware.start)  # detection runs in a worker after the first paint
    if args.exit_when_shown:
        def report() -> None:
            print(f"shown_at={time.time():.6f}", flush=True)
            window.close()
            app.quit()

        QTimer.singleShot(0, report)
    try:
        return app.exec()
    finally:
        instance.release()


if __name__ == "__main__":
    raise SystemExit(main())
