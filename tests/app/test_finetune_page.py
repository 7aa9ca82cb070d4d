"""The Fine-tune page: models from the library, the planner's memory estimate, and a real finetune worker whose
bad-input error reaches the page in plain words."""

import json
from pathlib import Path

from PySide6.QtCore import Qt

from bitsmith.app.pages.finetune import FinetunePage
from bitsmith.app.services import Services

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
          "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
          "vocab_size": 128256, "max_position_embeddings": 8192, "tie_word_embeddings": False}


LAYER = "model.layers.0.mlp.down_proj"


def _library(home: Path) -> Path:
    """A Bitsmith folder with Llama-3-8B's config (its JSON files are all the page reads)."""
    folder = home / "models" / "llama8b-2.50bpw"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "bitsmith.json").write_text(json.dumps({"format_version": 1, "layout": {LAYER: "int2_g64"},
                                                      "shapes": {LAYER: [4096, 14336]},
                                                      "bpw": {"quantized_linears": 2.5}, "metrics": {}}))
    return folder


def test_memory_estimate_follows_the_planner_and_a_bad_dataset_is_reported(qtbot, home: Path, gpu_profile) -> None:  # noqa: ANN001
    from bitsmith.engine.hardware import HardwareProfile
    from bitsmith.engine.modelinfo import ModelInfo
    from bitsmith.engine.plan import plan_model

    folder = _library(home)
    services = Services()
    services.hardware.profile = gpu_profile(free_gb=15.0, total_gb=16.0)
    page = FinetunePage(services)
    qtbot.addWidget(page)
    assert page.model_combo.count() == 1 and page.model_combo.currentData()[0] == str(folder)
    info = ModelInfo.from_config(CONFIG)
    hw = HardwareProfile.from_dict(services.hardware.profile)
    for seq in (512, 2048):
        page.seq_spin.setValue(seq)
        est = plan_model(info, 2.5, hw, seq_len=seq).stages["qsft"]
        assert est.verdict == "gpu" and page.estimate_label.text().startswith(f"Needs about {est.gpu_gb:.2f} GB")
    page.method_combo.setCurrentIndex(page.method_combo.findData("lora"))
    assert page.lr_spin.value() == 5e-4
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert "Choose a dataset" in page.status.text() and page.job is None
    page.data_edit.setText(str(home / "missing.jsonl"))
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert page.job.params["method"] == "lora" and page.job.params["out"] == str(folder) + "-lora"
    with qtbot.waitSignal(page.job.finished, timeout=180_000):
        pass
    assert page.status.text().startswith("Stopped with an error") and page.start_button.isEnabled()
    services.shutdown()
