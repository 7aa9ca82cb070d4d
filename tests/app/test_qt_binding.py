"""The Qt binding keeps Python's reference counts: PySide6 6.12.0 on CPython 3.11 drops a reference to None on every
void call and to True/False on every signal emit, and the app then dies mid-chat with "Fatal Python error:
bool_dealloc" after a few hundred streamed tokens (from 3.12 on these objects are immortal and nothing happens).
6.11.3 does not. Run in a child process: on a broken binding the probe itself may abort."""

import os
import subprocess
import sys

PROBE = r"""
import sys
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QLabel
app = QApplication([])
class O(QObject):
    sig = Signal(object)
o = O()
o.sig.connect(lambda v: None)
label = QLabel()
before = sys.getrefcount(None), sys.getrefcount(True)
for i in range(200):  # what each streamed token does: signals emitted, a label's text set
    o.sig.emit(i)
    label.setText(str(i))
after = sys.getrefcount(None), sys.getrefcount(True)
print("LOST", before[0] - after[0], before[1] - after[1])
"""


def test_signals_and_calls_do_not_drop_references_to_none_true_and_false() -> None:
    import PySide6

    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    lost = next((line.split()[1:] for line in run.stdout.splitlines() if line.startswith("LOST")), None)
    assert run.returncode == 0 and lost is not None and max(int(n) for n in lost) < 20, (
        f"PySide6 {PySide6.__version__} on Python {sys.version.split()[0]} loses references (None, True: {lost}; "
        f"exit {run.returncode}); the app would crash mid-chat. Use PySide6 < 6.12 on Python < 3.12.\n"
        f"{run.stderr[-800:]}")
