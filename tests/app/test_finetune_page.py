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


# A made-up chat template (not ChatML, so the test sees that the model's own one is used) and its EOS token.
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% if m['role'] == 'assistant' %}"
            "{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")


def _with_tokenizer(folder: Path) -> Path:
    (folder / "chat_template.jinja").write_text(TEMPLATE)
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}, "bos_token": "<s>"}))
    return folder


def _page(qtbot, gpu_profile):  # noqa: ANN001, ANN202
    services = Services()
    services.hardware.profile = gpu_profile()
    page = FinetunePage(services)
    qtbot.addWidget(page)
    return page


def _preview(qtbot, page, data: str) -> dict:  # noqa: ANN001
    """Type `data` into the dataset field and wait for the preview job's answer."""
    page.data_edit.setText(data)
    with qtbot.waitSignal(page.preview_box.updated, timeout=120_000):
        page.data_edit.editingFinished.emit()
    return page.preview_box.preview


def _format_at(page, text: str):  # noqa: ANN001, ANN202
    """The character format the preview shows `text` in."""
    cursor = page.preview_box.view.document().find(text)
    assert not cursor.isNull(), f"{text!r} is not shown"
    return cursor.charFormat()


def test_preview_greys_the_prompt_shows_the_answer_and_counts_the_split(qtbot, home: Path, gpu_profile,  # noqa: ANN001
                                                                       tmp_path: Path) -> None:
    from bitsmith.app.pages.dataset_preview import IGNORED_COLOR, IGNORED_STYLE, TRAINED_STYLE, examples_html
    from bitsmith.engine.finetune.data import load_dataset
    from bitsmith.engine.finetune.split import split_documents

    _with_tokenizer(_library(home))
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Name colour {i}.", "input": "", "output": f"Answer {i}."})
                            + "\n" for i in range(12)))
    page = _page(qtbot, gpu_profile)
    box = page.preview_box
    preview = _preview(qtbot, page, str(data))
    assert preview["examples"][0]["segments"] == [["<user>Name colour 0.\n<assistant>", False],
                                                  ["Answer 0.</s>\n", True]]
    assert len(preview["examples"]) == 5 and preview["examples"][4]["where"] == "data.jsonl:5"
    train, held = split_documents(load_dataset(data).records, 0.1, seed=0)
    assert (preview["train"], preview["heldout"]) == (len(train), len(held)) == (11, 1)
    assert box.summary.text().startswith("12 examples (chats / instructions) · 1 held out")
    assert box.summary.text().endswith("(10 %), 11 for training")
    assert box.template_note.text() == "Formatted with llama8b-2.50bpw's own chat template."
    assert not box.problems.isVisibleTo(page) and box.legend.isVisibleTo(page) and "grey" in box.legend.text()
    html = examples_html(preview)
    assert f'<span style="{IGNORED_STYLE}">&lt;user&gt;Name colour 0.\n&lt;assistant&gt;</span>' in html
    assert f'<span style="{TRAINED_STYLE}">Answer 0.&lt;/s&gt;\n</span>' in html
    # What the view shows: the prompt in grey, the answer in bold normal text.
    assert _format_at(page, "Name colour 1.").foreground().color().name() == IGNORED_COLOR
    answer = _format_at(page, "Answer 1.</s>")
    assert answer.fontWeight() >= 600 and answer.foreground().color().name() != IGNORED_COLOR
    assert "on_bad_line" not in page.job_params()


def test_malformed_lines_are_named_with_what_to_fix_and_can_be_skipped(qtbot, home: Path, gpu_profile,  # noqa: ANN001
                                                                      tmp_path: Path) -> None:
    _with_tokenizer(_library(home))
    good = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]})
            for i in range(4)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join([good[0], good[1], '{"messages": [', good[2], '{"instruction": "hi"}', good[3]]) + "\n")
    page = _page(qtbot, gpu_profile)
    box = page.preview_box
    preview = _preview(qtbot, page, str(data))
    assert preview["documents"] == 4 and preview["skipped_count"] == 2
    text = box.problems.text()
    assert box.problems.isVisibleTo(page) and text.startswith("2 malformed records. The fine-tune stops at the first")
    assert "• data.jsonl:3: not valid JSON" in text and "• data.jsonl:5: 'output' must be a string" in text
    assert '"instruction", "input", "output"' in text  # the formats a line may have
    assert box.skip_box.isVisibleTo(page) and "on_bad_line" not in page.job_params()
    box.skip_box.setChecked(True)
    assert page.job_params()["on_bad_line"] == "skip" and "They will be skipped." in box.problems.text()
    # The examples still show, with the chat user turn greyed.
    assert preview["examples"][2]["segments"] == [["<user>q2\n<assistant>", False], ["a2</s>\n", True]]


def test_without_a_model_or_a_template_the_fallback_format_is_named(qtbot, home: Path, gpu_profile,  # noqa: ANN001
                                                                   tmp_path: Path) -> None:
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"prompt": "2+2?", "completion": "4"}) + "\n" +
                    json.dumps({"prompt": "3+3?", "completion": "6"}) + "\n")
    page = _page(qtbot, gpu_profile)
    assert page.model_combo.currentData() is None
    preview = _preview(qtbot, page, str(data))
    assert preview["template"] == "fallback" and page.preview_box.template_note.text().startswith(
        "No model chosen yet: chats are shown in ChatML")
    assert preview["examples"][0]["segments"] == [["<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", False],
                                                  ["4<|im_end|>\n", True]]
    # A model whose tokenizer has no chat template: the engine's ChatML with the model's EOS, said so.
    folder = _library(home)
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    page.refresh_models()
    with qtbot.waitSignal(page.preview_box.updated, timeout=120_000):
        page.update_preview()
    preview = page.preview_box.preview
    assert page.preview_box.template_note.text().startswith("llama8b-2.50bpw's tokenizer has no chat template")
    assert preview["examples"][1]["segments"][-1] == ["6<|im_end|></s>\n", True]
    # Plain text: every token trained, an end-of-text token after each document.
    text = tmp_path / "notes.txt"
    text.write_text("First note.\n\nSecond note.\n\nThird note.\n")
    preview = _preview(qtbot, page, str(text))
    assert preview["kinds"] == ["text"]
    assert preview["examples"][0]["segments"] == [["First note.", True], ["</s>", True]]
    assert page.preview_box.summary.text().startswith("3 examples (plain-text documents)")


def test_a_broken_json_file_and_an_offline_hub_dataset_are_explained(qtbot, home: Path, gpu_profile,  # noqa: ANN001
                                                                     tmp_path: Path) -> None:
    broken = tmp_path / "data.json"
    broken.write_text('[\n  {"instruction": "a", "output": "b"}\n  {"instruction": "c", "output": "d"}\n]\n')
    page = _page(qtbot, gpu_profile)
    box = page.preview_box
    assert _preview(qtbot, page, str(broken)) is None
    assert box.summary.text() == "The dataset cannot be used as it is."
    assert box.problems.text().startswith("data.json:3: not valid JSON") and not box.view.isVisibleTo(page)
    # A Hub dataset id (HF_HUB_OFFLINE=1 in the tests, and nothing cached under this name).
    page.data_edit.setText("bitsmith-tests/no-such-dataset")
    with qtbot.waitSignal(box.updated, timeout=120_000):
        page.data_edit.editingFinished.emit()
        assert box.summary.text().startswith("Fetching the Hub dataset bitsmith-tests/no-such-dataset… Offline mode")
    assert box.problems.text().startswith("Cannot fetch the Hub dataset bitsmith-tests/no-such-dataset: offline mode")
    assert "choose a dataset file on this computer" in box.problems.text()
