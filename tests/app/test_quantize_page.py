"""The Quantize wizard driven through its widgets: budget figures from the planner, cancel and resume of a real
quantize job, and (slow) a whole demo run of the bundled SmolLM2 ending in results, chat and GGUF export."""

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from bitsmith.engine.hardware import HardwareProfile


@pytest.fixture
def page(qtbot, open_window, home: Path):  # noqa: ANN001, ANN201
    window = open_window("quantize")  # after `home`: the window's settings live under the test's BITSMITH_HOME
    page = window.pages["quantize"]
    assert type(page).__name__ == "QuantizePage"
    return page


def _to_budget(qtbot, page, profile: dict | None = None) -> None:  # noqa: ANN001
    if profile is not None:
        page.services.hardware.profile = profile
        page.services.hardware.profile_changed.emit(profile)
    assert page.step() == 0 and page.bundled_radio.isChecked()
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.step() == 1, timeout=60_000)
    if profile is not None:
        assert "RTX 4060" in page.hardware_text.text()
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    assert page.step() == 2


def test_budget_step_shows_the_planners_size_and_chat_memory(qtbot, page, home: Path, gpu_profile) -> None:  # noqa: ANN001
    from bitsmith.app.chat.models import bundled_path
    from bitsmith.engine.modelinfo import ModelInfo
    from bitsmith.engine.plan import plan_model, quantized_bytes

    if bundled_path() is None:
        pytest.skip("the bundled SmolLM2 GGUF is not installed")
    profile = gpu_profile()
    _to_budget(qtbot, page, profile)
    info = ModelInfo.from_gguf(bundled_path(), "SmolLM2-135M-Instruct")
    # SmolLM2's hidden size 576 leaves shorter last groups: the default preset's smallest layout (all INT2/g64 with
    # 8-bit scale codes) costs 2.21 bpw, so 2.2 is not offered; the demo preset's plain INT2/g64 costs 2.29.
    assert page.min_label.text() == "2.21" and page.slider.minimum() == 221 and page.slider.maximum() == 425
    assert not page.preset_buttons[2.2].isEnabled() and page.preset_buttons[2.5].isEnabled()
    for preset in (2.5, 3.0, 4.0):
        qtbot.mouseClick(page.preset_buttons[preset], Qt.MouseButton.LeftButton)
        assert page.slider.value() == int(preset * 100) and page.bpw() == preset
        mb = quantized_bytes(info, preset) / 2**20
        assert page.size_label.text().startswith(f"{mb:,.0f} MB")
        chat = plan_model(info, preset, HardwareProfile.from_dict(profile), source_on_disk=True).stages["chat"]
        assert chat.verdict == "gpu" and page.vram_label.text() == f"Chat runs on the GPU: {chat.gpu_gb:.2f} GB of VRAM"
        assert page.out_edit.text().endswith(f"SmolLM2-135M-Instruct-{preset:.2f}bpw")
    chart = page.budget_curve  # before any measurement: predicted size over the slider's range, marker at the budget
    assert chart.title.startswith("Predicted size") and chart.points[0][0] == 2.21 and chart.points[-1][0] == 4.25
    assert chart.marker == (4.0, pytest.approx(quantized_bytes(info, 4.0) / 2**20))
    sizes = []
    for value in (221, 300, 425):
        page.slider.setValue(value)
        assert page.bpw_spin.value() == pytest.approx(value / 100)
        sizes.append(float(page.size_label.text().split(" MB")[0].replace(",", "")))
    assert sizes[0] < sizes[1] < sizes[2]
    page.bpw_spin.setValue(2.0)  # below the floor: clamped
    assert page.bpw() == 2.21
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("demo"))  # the demo searches the plain pair
    assert page.min_label.text() == "2.29" and page.bpw() == 2.29
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("default"))
    assert page.min_label.text() == "2.21"
    # A GPU too small for even the runtime: chat moves to the CPU, said in plain words.
    tiny = gpu_profile(free_gb=0.2, total_gb=0.5)
    page.services.hardware.profile = tiny
    page.services.hardware.profile_changed.emit(tiny)
    assert page.vram_label.text().startswith("Chat runs on the CPU")


def test_the_budget_starts_at_the_settings_default_clamped_to_the_models_range(qtbot, open_window, home: Path,  # noqa: ANN001
                                                                               gpu_profile) -> None:
    from bitsmith.app.chat.models import bundled_path
    from bitsmith.app.services import DEFAULT_BPW_KEY, Settings

    if bundled_path() is None:
        pytest.skip("the bundled SmolLM2 GGUF is not installed")
    Settings().set(DEFAULT_BPW_KEY, 3.0)  # chosen on the Settings page in an earlier session
    window = open_window("quantize")
    page = window.pages["quantize"]
    _to_budget(qtbot, page, gpu_profile())
    assert page.slider.value() == 300 and page.bpw() == 3.0 and page.out_edit.text().endswith("-3.00bpw")

    # A new default on the Settings page moves the wizard, clamped to what this model can do: the default preset's
    # smallest layout of SmolLM2 is 2.21 bpw, the demo preset's 2.29.
    settings_page = window.page("settings")
    settings_page.budget_spin.setValue(2.2)
    assert page.services.settings.get(DEFAULT_BPW_KEY) == 2.2
    assert page.slider.value() == 221 and page.bpw() == 2.21
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("demo"))
    assert page.bpw() == 2.29
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("default"))
    assert page.bpw() == 2.21  # still the default, as far down as this preset allows

    # The user's own choice stays through a preset change; a newer default replaces it.
    page.slider.setValue(350)
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("demo"))
    assert page.bpw() == 3.5
    settings_page.budget_spin.setValue(4.0)
    assert page.slider.value() == 400 and page.bpw() == 4.0
    # A hand-edited settings file: kept within the slider's range, or the usual 2.5 when unreadable.
    page.services.settings.set(DEFAULT_BPW_KEY, 9.0)
    assert page.bpw() == 4.25 and page.slider.value() == 425
    page.services.settings.set(DEFAULT_BPW_KEY, "lots")
    assert page.bpw() == 2.5
    window.close()


def test_a_bad_local_path_is_refused_with_a_message(qtbot, page, home: Path) -> None:
    page.local_radio.setChecked(True)
    qtbot.keyClicks(page.local_edit, str(home / "nowhere"))
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    assert page.step() == 0 and "does not exist" in page.model_status.text()


def test_cancel_stops_the_real_job_and_resume_starts_it_again(qtbot, page, home: Path, bundled_gguf) -> None:  # noqa: ANN001
    _to_budget(qtbot, page)
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("demo"))
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)  # "Start quantizing"
    assert page.step() == 3 and page.job is not None and page.job.running
    assert page.job.params["source"] == "bundled" and page.job.params["preset"] == "demo"
    qtbot.waitUntil(lambda: "load" in page.stage_rows, timeout=120_000)
    assert page.services.jobs.running_count() == 1
    with qtbot.waitSignal(page.job.finished, timeout=60_000) as done:
        qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    assert done.args[0]["status"] in ("cancelled", "error")  # a stop forced during model loading reads as error
    assert page.run_title.text() in ("Cancelled", "The job stopped with an error")
    assert page.resume_button.isVisible() and not page.cancel_button.isVisible()
    first = page.job
    qtbot.mouseClick(page.resume_button, Qt.MouseButton.LeftButton)
    assert page.job is not first and page.job.running and page.job.params == first.params
    page.job.kill()
    qtbot.waitUntil(lambda: not page.job.running, timeout=30_000)


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~6 min on two idle cores; more than 15 min on a loaded machine (seen in CI)
def test_a_demo_quantize_of_the_bundled_model_from_the_wizard(qtbot, page, home: Path, bundled_gguf) -> None:  # noqa: ANN001
    from bitsmith.engine.model_summary import summarize

    _to_budget(qtbot, page)
    qtbot.mouseClick(page.preset_buttons[3.0], Qt.MouseButton.LeftButton)
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("demo"))
    out = Path(page.out_edit.text())
    assert out == home.resolve() / "models" / "SmolLM2-135M-Instruct-3.00bpw"
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.step() == 4 or (page.job is not None and not page.job.running), timeout=2_200_000)
    assert page.step() == 4, page.log_view.toPlainText()[-2000:]
    assert {"load", "evaluate-fp", "search", "calibrate", "evaluate", "save"} <= set(page.stage_rows)
    assert "layout at" in page.log_view.toPlainText()
    summary = summarize(out)
    assert 2.5 < summary["bpw_quantized"] <= 3.0
    ppl_fp, ppl_q = page.result["ppl_fp"], page.result["ppl"]
    assert 10 < ppl_fp < ppl_q < 20 * ppl_fp
    assert page.ppl_before.text() == f"{ppl_fp:.2f}" and page.ppl_after.text().startswith(f"{ppl_q:.2f}")
    assert page.size_after.text() == f"{summary['size_bytes'] / 2**20:,.0f} MB"
    assert len(page.layout_chart.layers) == len(summary["layers"]) == 210
    assert len(page.curve_chart.points) >= 10 and page.curve_chart.marker is not None
    # Chat with it: the chat page now points at the new folder.
    qtbot.mouseClick(page.chat_button, Qt.MouseButton.LeftButton)
    window = page.window()
    assert window.current_page_name() == "chat"
    assert window.pages["chat"].model_combo.currentData() == str(out)
    # Fine-tune it: the fine-tune page opens with the new model selected.
    window.show_page("quantize")
    qtbot.mouseClick(page.finetune_button, Qt.MouseButton.LeftButton)
    assert window.current_page_name() == "finetune"
    assert window.pages["finetune"].model_combo.currentData()[0] == str(out)
    # The Models page lists it with its numbers.
    models = window.page("models")
    window.show_page("models")
    [row] = [m for m in models.library if m["path"] == out]
    assert row["kind"] == "Bitsmith" and row["bpw"] == summary["bpw_quantized"] and row["ppl"] == pytest.approx(ppl_q)
    # The budget step now shows the measured curve for this model.
    window.show_page("quantize")
    page.go(2)
    assert page.budget_curve.title.startswith("Predicted perplexity") and page.budget_curve.marker is not None
    assert page.budget_curve.points == sorted(page.curve)
    # Export GGUF runs the real export job next to the folder.
    page.go(4)
    with qtbot.waitSignal(page.services.jobs.job_finished, timeout=600_000):
        qtbot.mouseClick(page.export_button, Qt.MouseButton.LeftButton)
    gguf = out.with_name(out.name + ".gguf")
    assert gguf.is_file() and page.export_status.text().startswith(f"Exported {gguf}"), page.export_status.text()


def test_planning_memory_follows_the_users_values_and_resets_to_detected(qtbot, page, home: Path,  # noqa: ANN001
                                                                          gpu_profile) -> None:
    from bitsmith.app.chat.models import bundled_path
    from bitsmith.app.pages.quantize import PLAN_GPU_KEY, PLAN_RAM_KEY
    from bitsmith.engine.modelinfo import ModelInfo
    from bitsmith.engine.plan import plan_model

    if bundled_path() is None:
        pytest.skip("the bundled SmolLM2 GGUF is not installed")
    info = ModelInfo.from_gguf(bundled_path(), "SmolLM2-135M-Instruct")
    detected = gpu_profile(free_gb=7.0, total_gb=8.0)  # 24 GB of RAM available

    def chat(profile: dict) -> str:
        est = plan_model(info, page.bpw(), HardwareProfile.from_dict(profile), source_on_disk=True).stages["chat"]
        return {"gpu": f"Chat runs on the GPU: {est.gpu_gb:.2f} GB of VRAM",
                "cpu": f"Chat runs on the CPU: {est.cpu_gb:.2f} GB of RAM"}.get(est.verdict, est.verdict)

    page.services.hardware.profile = detected
    page.services.hardware.profile_changed.emit(detected)
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.step() == 1, timeout=60_000)
    assert (page.gpu_spin.value(), page.ram_spin.value()) == (7.0, 24.0)
    assert page.gpu_spin.isEnabled() and not page.reset_plan_button.isEnabled()
    assert page.plan_note.text().startswith("Planning with the detected memory")
    # Plan for a machine whose GPU has 0.2 GB free: the chat figures move to the CPU.
    page.gpu_spin.setValue(0.2)
    assert page.reset_plan_button.isEnabled() and "detected: 7.0 GB" in page.plan_note.text()
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    assert page.step() == 2
    small_gpu = gpu_profile(free_gb=0.2, total_gb=8.0)
    assert page.vram_label.text() == chat(small_gpu) and page.vram_label.text().startswith("Chat runs on the CPU")
    assert page.plan_label.text().startswith("Planned for 0.2 GB of GPU memory and 24.0 GB of RAM")
    assert page.chat_title.text() == "Chat with the memory you plan for"
    # No GPU and half a GB of RAM: nothing fits.
    qtbot.mouseClick(page.back_button, Qt.MouseButton.LeftButton)
    page.gpu_spin.setValue(0.0)
    page.ram_spin.setValue(0.5)
    assert page.gpu_spin.text().startswith("none")
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    tiny = {**detected, "gpus": [], "ram_available_bytes": 2**29, "best_device": "cpu"}
    est = plan_model(info, page.bpw(), HardwareProfile.from_dict(tiny), source_on_disk=True).stages["chat"]
    assert est.verdict == "no_fit" and page.vram_label.text() == f"Won't fit for chat: {est.gap_gb:.2f} GB short"
    assert page.plan_label.text().startswith("Planned for no GPU and 0.5 GB of RAM")
    # Remembered in the settings; a detection refresh keeps the user's values.
    assert (page.services.settings.get(PLAN_GPU_KEY), page.services.settings.get(PLAN_RAM_KEY)) == (0.0, 0.5)
    page.services.hardware.profile_changed.emit(detected)
    assert page.vram_label.text().startswith("Won't fit")
    # Reset: back to the detected memory and the detected machine's figures.
    qtbot.mouseClick(page.back_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(page.reset_plan_button, Qt.MouseButton.LeftButton)
    assert (page.gpu_spin.value(), page.ram_spin.value()) == (7.0, 24.0) and not page.reset_plan_button.isEnabled()
    assert page.services.settings.get(PLAN_GPU_KEY) is None and page.services.settings.get(PLAN_RAM_KEY) is None
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    assert page.vram_label.text() == chat(detected) and page.vram_label.text().startswith("Chat runs on the GPU")
    assert page.plan_label.text() == "" and page.chat_title.text() == "Chat on this machine"


def test_planning_profile_plans_for_another_machine(gpu_profile) -> None:  # noqa: ANN001
    from bitsmith.app.pages import quantize_budget as qb
    from bitsmith.engine.hardware import AppleInfo, CpuInfo
    from bitsmith.engine.plan import accelerator

    gib = 2**30
    two = gpu_profile(free_gb=7.0, total_gb=8.0)
    two["gpus"].append({**two["gpus"][0], "index": 1, "name": "small", "total_bytes": 4 * gib, "free_bytes": 3 * gib})
    assert qb.planning_profile(two) is two and qb.detected_memory_gb(two) == (7.0, 24.0)
    # The GPU the plan uses keeps its place even when given less than the other one has.
    hw = HardwareProfile.from_dict(qb.planning_profile(two, gpu_gb=2.0))
    assert [g.index for g in hw.gpus] == [0] and accelerator(hw).budget == 2 * gib and hw.gpus[0].total_bytes == 8 * gib
    # A CPU-only machine planned with a 12 GB GPU, and with 64 GB of RAM.
    cpu_only = HardwareProfile(cpu=CpuInfo("c", "x86_64", 4, 8), ram_total_bytes=16 * gib,
                               ram_available_bytes=12 * gib).to_dict()
    assert qb.detected_memory_gb(cpu_only) == (0.0, 12.0)
    planned = qb.planning_profile(cpu_only, gpu_gb=12.0, ram_gb=64.0)
    assert planned["best_device"] == "cuda:0" and qb.detected_memory_gb(planned) == (12.0, 64.0)
    assert planned["ram_total_bytes"] == 64 * gib and cpu_only["gpus"] == []  # the detected profile is untouched
    # An Apple machine: the MPS working set follows the value; 0 plans for the CPU alone.
    mac = HardwareProfile(cpu=CpuInfo("m", "arm64", 8, 8), ram_total_bytes=16 * gib, ram_available_bytes=10 * gib,
                          apple=AppleInfo("Apple M2", 16 * gib, "14.0", True)).to_dict()
    assert qb.detected_memory_gb(mac)[0] == pytest.approx(16 * 0.7)
    assert qb.detected_memory_gb(qb.planning_profile(mac, gpu_gb=8.0))[0] == pytest.approx(8.0, abs=1e-6)
    none = qb.planning_profile(mac, gpu_gb=0.0)
    assert none["best_device"] == "cpu" and qb.detected_memory_gb(none)[0] == 0.0


def test_budget_verdicts_follow_the_preset_and_the_loading(qtbot, page, home: Path) -> None:  # noqa: ANN001
    """The memory verdicts plan the job the wizard would start: the effort preset (and its distillation) and the
    Advanced panel's loading choice, recomputed when either changes. RAM is set between the planner's needs so the
    choices flip them: distillation (best) fits streamed but not whole; calibration fits the demo preset whole but
    not the default's."""
    from bitsmith.app.chat.models import bundled_path
    from bitsmith.engine.hardware import CpuInfo
    from bitsmith.engine.modelinfo import ModelInfo
    from bitsmith.engine.plan import plan_model
    from bitsmith.engine.plan_quantize import QuantizeSettings

    if bundled_path() is None:
        pytest.skip("the bundled SmolLM2 GGUF is not installed")
    info = ModelInfo.from_gguf(bundled_path(), "SmolLM2-135M-Instruct")
    gib = 2**30

    def machine(ram_gb: float) -> dict:
        return HardwareProfile(cpu=CpuInfo("Test CPU", "x86_64", 8, 16, ["avx2"]), ram_total_bytes=32 * gib,
                               ram_available_bytes=int(ram_gb * gib), disk_path="/",
                               disk_free_bytes=500 * gib).to_dict()

    def stage(profile: dict, preset: str, stream: bool | None, name: str):  # noqa: ANN202
        settings = QuantizeSettings.from_preset(preset, "cpu", stream)
        return plan_model(info, 3.0, HardwareProfile.from_dict(profile), source_on_disk=True,
                          quantize=settings).stages[name]

    probe = machine(64)
    whole, streamed = (stage(probe, "best", s, "distill").cpu_gb for s in (False, True))
    assert streamed < whole  # streamed, the fp32 model is not held: only what lies outside the blocks
    profile = machine((whole + streamed) / 2)
    page.services.hardware.profile = profile
    page.services.hardware.profile_changed.emit(profile)
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.step() == 1, timeout=60_000)
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    assert page.step() == 2
    qtbot.mouseClick(page.preset_buttons[3.0], Qt.MouseButton.LeftButton)
    page.advanced.loading_combo.setCurrentIndex(1)  # whole model in memory
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("demo"))
    assert page.calib_label.text() == "Calibration runs on the CPU (slow for big models)."  # demo: no distillation
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("best"))
    est = stage(profile, "best", False, "distill")
    assert est.verdict == "no_fit" and page.calib_label.text().endswith(
        f"Distillation after it won't fit: {est.gap_gb:.2f} GB of RAM short.")
    page.advanced.loading_combo.setCurrentIndex(2)  # streamed: the same preset now fits
    est = stage(profile, "best", True, "distill")
    assert est.verdict == "cpu" and page.calib_label.text().endswith(
        f"Distillation after it runs on the CPU: {est.cpu_gb:.2f} GB of RAM.")
    assert page.job_params()["stream"] is True and page.job_params()["preset"] == "best"
    # Calibration's own verdict: RAM between the demo's and the default's needs, loading whole.
    demo, default = (stage(probe, p, False, "calibrate").cpu_gb for p in ("demo", "default"))
    assert demo < default
    profile = machine((demo + default) / 2)
    page.services.hardware.profile = profile
    page.services.hardware.profile_changed.emit(profile)
    page.advanced.loading_combo.setCurrentIndex(1)
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("default"))
    assert stage(profile, "default", False, "calibrate").verdict == "no_fit"
    assert page.calib_label.text().startswith("Calibration runs — not enough memory on this machine.")
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("demo"))
    assert stage(profile, "demo", False, "calibrate").verdict == "cpu"
    assert page.calib_label.text() == "Calibration runs on the CPU (slow for big models)."
