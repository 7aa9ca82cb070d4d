"""The Jobs page against real worker processes: listing, live log, cancel, retry under the same id, open folder,
and jobs left by an earlier session (including one whose worker died)."""

from pathlib import Path

from PySide6.QtCore import Qt

from bitsmith.app.pages.jobs import JobsPage, read_jobs
from bitsmith.app.services import Services
from bitsmith.engine.jobfiles import write_json_atomic

HERE = Path(__file__).resolve().parent
SLEEP_ENV = {"PYTHONPATH": str(HERE), "BITSMITH_EXTRA_JOB_MODULES": "app_test_jobs"}


def _page(qtbot) -> JobsPage:  # noqa: ANN001
    page = JobsPage(Services(SLEEP_ENV))
    qtbot.addWidget(page)
    page.show()
    return page


def _row_of(page: JobsPage, job_id: str) -> int:
    return next(i for i in range(page.table.rowCount()) if page.table.item(i, 0).text() == job_id)


def test_a_running_job_shows_its_log_cancels_and_retries(qtbot, home: Path, monkeypatch) -> None:  # noqa: ANN001
    page = _page(qtbot)
    assert page.table.rowCount() == 0 and "No jobs yet" in page.detail_label.text()
    job = page.services.jobs.start("app-test-sleep", {"seconds": 60})
    qtbot.waitUntil(lambda: job.job_id in [r["id"] for r in page.rows], timeout=30_000)
    page.table.selectRow(_row_of(page, job.job_id))
    qtbot.waitUntil(lambda: "sleeping" in page.log_view.toPlainText(), timeout=60_000)
    assert page.table.item(_row_of(page, job.job_id), 2).text() == "Running"
    assert page.cancel_button.isEnabled() and not page.retry_button.isEnabled()
    with qtbot.waitSignal(job.finished, timeout=30_000):
        qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.table.item(_row_of(page, job.job_id), 2).text() == "Cancelled", timeout=10_000)
    assert page.retry_button.isEnabled() and not page.cancel_button.isEnabled()

    opened: list[str] = []
    monkeypatch.setattr("bitsmith.app.pages.jobs.QDesktopServices.openUrl",
                        lambda url: opened.append(url.toLocalFile()))
    qtbot.mouseClick(page.open_button, Qt.MouseButton.LeftButton)
    assert Path(opened[0]) == home.resolve() / "jobs" / job.job_id

    qtbot.mouseClick(page.retry_button, Qt.MouseButton.LeftButton)
    again = page.services.jobs.jobs[-1]
    assert again is not job and again.job_id == job.job_id and again.params == {"seconds": 60}
    qtbot.waitUntil(lambda: page.table.item(_row_of(page, job.job_id), 2).text() == "Running", timeout=30_000)
    qtbot.waitUntil(lambda: "run 2 of job" in page.log_view.toPlainText(), timeout=60_000)
    with qtbot.waitSignal(again.finished, timeout=30_000):
        again.cancel()
    page.services.shutdown()


def test_jobs_from_an_earlier_session_and_a_dead_worker(qtbot, home: Path) -> None:
    jobs = home / "jobs"
    done = jobs / "20250101-100000-quantize-aaaaaa"
    dead = jobs / "20250102-100000-finetune-bbbbbb"
    probe = jobs / "20250103-100000-hardware-cccccc"
    for folder, kind, state in ((done, "quantize", {"status": "done"}),
                                (dead, "finetune", {"status": "running", "pid": 999_999_999}),
                                (probe, "hardware", {"status": "done"})):
        write_json_atomic(folder / "request.json", {"kind": kind, "params": {"x": 1}, "job_id": folder.name})
        write_json_atomic(folder / "state.json", {"kind": kind, "started_at": folder.name[:15], **state})
        (folder / "job.log").write_text(f"log of {kind}\n")
    assert [r["id"] for r in read_jobs(jobs)] == [probe.name, dead.name, done.name]
    page = _page(qtbot)
    assert [page.table.item(i, 0).text() for i in range(page.table.rowCount())] == [dead.name, done.name]
    assert page.table.item(0, 2).text() == "Failed" and page.table.item(1, 2).text() == "Done"
    page.table.selectRow(0)
    assert "log of finetune" in page.log_view.toPlainText() and "may have crashed" in page.detail_label.text()
    page.show_probes.setChecked(True)
    assert page.table.rowCount() == 3 and page.selected()["id"] == dead.name  # the selection survives a refresh
