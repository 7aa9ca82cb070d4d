"""The Hub client against a local fake Hub (tests/engine/hub_server.py) serving a tiny real Llama model."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import random
import shutil
import socket
import sys
import threading
import types
from collections import namedtuple
from pathlib import Path

import pytest

from bitsmith.engine import hub_download
from bitsmith.engine.errors import (
    BadInputError,
    CancelledError,
    DiskFullError,
    NetworkError,
    UnsupportedModelError,
)

_spec = importlib.util.spec_from_file_location("bitsmith_test_hub_server", Path(__file__).with_name("hub_server.py"))
hub_server = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = hub_server
_spec.loader.exec_module(hub_server)

TINY = "bitsmith-test/tiny-llama"
GATED = "bitsmith-test/gated-llama"
PRIVATE = "bitsmith-test/private-llama"
PICKLE = "bitsmith-test/pickle-only"
GOOD_TOKEN = "hf_good_" + "x" * 20
BIG_SHARD = "model-00001-of-00002.safetensors"


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The files of a tiny real Llama (random weights, sharded safetensors, SmolLM2 tokenizer)."""
    folder = hub_server.build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert BIG_SHARD in files and "model.safetensors.index.json" in files and "tokenizer.json" in files
    return files


@pytest.fixture()
def hub(tiny_files, tmp_path, monkeypatch):
    """A running fake Hub, with huggingface_hub and Bitsmith pointed at it and every cache in tmp_path."""
    import huggingface_hub.constants as hf_constants

    rng = random.Random()
    extras = {  # files a download must skip: pickles and sub-folders
        "pytorch_model.bin": rng.randbytes(4096),
        "training_args.bin": rng.randbytes(512),
        "original/params.json": b"{}",
    }
    fake = hub_server.FakeHub()
    fake.add(TINY, {**tiny_files, **extras}, downloads=500, likes=7, tags=["llama"])
    fake.add(GATED, dict(tiny_files), gated="manual", tokens={GOOD_TOKEN}, license="llama3", downloads=50)
    fake.add(PRIVATE, dict(tiny_files), private=True, tokens={GOOD_TOKEN})
    pickle_files = {k: v for k, v in tiny_files.items() if not k.endswith((".safetensors", ".json")) or
                    k in ("config.json", "tokenizer.json", "tokenizer_config.json")}
    pickle_files["pytorch_model.bin"] = rng.randbytes(20000)
    fake.add(PICKLE, pickle_files)
    fake.start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub read these at import (tests/conftest.py sets HF_HUB_OFFLINE=1): patch its constants.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("BITSMITH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(hub_download, "RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(hub_download, "CHUNK_SIZE", 256 * 1024)
    monkeypatch.setattr(hub_download, "PROGRESS_EVERY_S", 0.0)  # report every chunk
    yield fake
    fake.stop()


def _go_offline(monkeypatch) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


def _models(tmp_path: Path) -> Path:
    return tmp_path / "models"


def _resolve_gets(hub, name: str) -> list[dict]:
    return [r for r in hub.log if r["method"] == "GET" and r["role"] == "hub" and r["path"].endswith("/" + name)]


def _range_start(header: str | None) -> int:
    assert header and header.startswith("bytes=") and header.endswith("-"), header
    return int(header[len("bytes="):-1])


# -- download -----------------------------------------------------------------------------------------------


def test_download_fetches_what_a_model_needs_verified_and_loadable(hub, tiny_files, tmp_path):
    events = []
    result = hub_download.download_model(TINY, progress=events.append)
    dest = _models(tmp_path) / "bitsmith-test--tiny-llama"
    assert result.path == dest and result.source == "hub"
    expected = {n for n in tiny_files}  # config, generation config, tokenizer, template, card, index, shards
    assert set(result.files) == expected
    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert on_disk == expected | {hub_download.MANIFEST}
    for name in expected:
        assert (dest / name).read_bytes() == tiny_files[name], name
    assert not list(dest.parent.glob(".*partial*"))  # staging renamed away
    # No pickles, nothing from sub-folders, ever requested.
    assert not [r for r in hub.log if r["path"].endswith((".bin", "params.json")) and r["method"] == "GET"]
    manifest = json.loads((dest / hub_download.MANIFEST).read_text())
    assert manifest["commit"] == result.commit and manifest["model_id"] == TINY
    big = manifest["files"][BIG_SHARD]
    assert big["hash"] == "sha256:" + hashlib.sha256(tiny_files[BIG_SHARD]).hexdigest()
    # Progress: overall bytes never go back, and end at the total.
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == result.total_bytes == sum(map(len, tiny_files.values()))
    assert events[-1].files_done == events[-1].files_total == len(expected)
    assert all(e.file_total is None or 0 <= e.file_done <= e.file_total for e in events)
    # It is a real model: transformers loads it and it gives the same logits as the source.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(dest)
    ids = tok("Hello there", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = AutoModelForCausalLM.from_pretrained(dest)(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()


def test_second_download_is_a_no_op(hub):
    first = hub_download.download_model(TINY)
    hub.log.clear()
    second = hub_download.download_model(TINY)
    assert second.source == "local" and second.path == first.path and second.downloaded_bytes == 0
    assert not [r for r in hub.log if "/resolve/" in r["path"] or r["role"] == "cdn"]


def test_cancelled_download_resumes_with_a_range_request(hub, tiny_files, tmp_path):
    cancel = threading.Event()
    seen = {}

    def on_progress(p):
        if p.file == BIG_SHARD and p.file_done > 0:
            seen["at"] = p.file_done
            cancel.set()

    with pytest.raises(CancelledError) as err:
        hub_download.download_model(TINY, progress=on_progress, cancel=cancel)
    assert "resume" in err.value.hint
    dest = _models(tmp_path) / "bitsmith-test--tiny-llama"
    assert not dest.exists()  # the model folder never appears half-done
    parts = list((dest.parent / f".{dest.name}.partial" / hub_download.PARTS).glob("*.part"))
    assert len(parts) == 1
    kept = parts[0].stat().st_size
    assert 0 < kept < len(tiny_files[BIG_SHARD])

    hub.log.clear()
    hub.served_bytes.clear()
    result = hub_download.download_model(TINY)
    assert (result.path / BIG_SHARD).read_bytes() == tiny_files[BIG_SHARD]
    cdn_gets = [r for r in hub.log if r["role"] == "cdn" and r["path"].endswith(BIG_SHARD)]
    assert [r["range"] for r in cdn_gets] == [f"bytes={kept}-"]
    assert hub.served_bytes[BIG_SHARD] == len(tiny_files[BIG_SHARD]) - kept
    # Files finished before the cancel are not fetched again.
    assert all(not _resolve_gets(hub, name) for name in ("config.json", "tokenizer.json"))


def test_dropped_connection_is_resumed_within_the_call(hub, tiny_files):
    cut = random.randrange(100_000, 2_000_000)
    hub.cut_after(BIG_SHARD, cut, times=2)
    result = hub_download.download_model(TINY)
    assert (result.path / BIG_SHARD).read_bytes() == tiny_files[BIG_SHARD]
    ranges = [r["range"] for r in hub.log if r["role"] == "cdn" and r["path"].endswith(BIG_SHARD)]
    assert len(ranges) == 3 and ranges[0] is None
    first, second = _range_start(ranges[1]), _range_start(ranges[2])
    assert 0 < first <= cut and first < second <= first + cut  # resumed from what had arrived
    assert hub.served_bytes[BIG_SHARD] == len(tiny_files[BIG_SHARD]) + (cut - first) + (first + cut - second)


def test_network_failure_keeps_data_and_the_next_run_resumes(hub, tiny_files):
    cut = random.randrange(100_000, 1_000_000)
    hub.cut_after(BIG_SHARD, cut)  # some data arrives...
    hub.cut_after(BIG_SHARD, 0, times=5)  # ...then the connection keeps dropping
    with pytest.raises(NetworkError) as err:
        hub_download.download_model(TINY, retries=1)
    assert BIG_SHARD in str(err.value) and "resume" in err.value.hint
    hub.clear_knobs()
    hub.log.clear()
    result = hub_download.download_model(TINY)
    assert (result.path / BIG_SHARD).read_bytes() == tiny_files[BIG_SHARD]
    ranges = [r["range"] for r in hub.log if r["role"] == "cdn" and r["path"].endswith(BIG_SHARD)]
    assert len(ranges) == 1 and 0 < _range_start(ranges[0]) <= cut


def test_server_ignoring_range_restarts_the_file_cleanly(hub, tiny_files):
    hub.cut_after(BIG_SHARD, 300_000, times=1)
    hub.ignore_range = True
    result = hub_download.download_model(TINY)
    assert (result.path / BIG_SHARD).read_bytes() == tiny_files[BIG_SHARD]


@pytest.mark.parametrize("name", [BIG_SHARD, "config.json"])  # LFS (sha256) and small file (git blob sha1)
def test_corrupted_file_is_detected_reported_and_removed(hub, tmp_path, name):
    hub.corrupt(name)  # every time
    with pytest.raises(NetworkError) as err:
        hub_download.download_model(TINY)
    assert "corrupted" in str(err.value) and name in str(err.value)
    dest = _models(tmp_path) / "bitsmith-test--tiny-llama"
    staging = dest.parent / f".{dest.name}.partial"
    assert not dest.exists()
    assert not (staging / name).exists() and not list((staging / hub_download.PARTS).glob("*.part"))
    assert len(_resolve_gets(hub, name)) == 2  # one automatic retry, then the report


def test_one_off_corruption_heals_with_one_retry(hub, tiny_files):
    hub.corrupt(BIG_SHARD, times=1)
    result = hub_download.download_model(TINY)
    assert (result.path / BIG_SHARD).read_bytes() == tiny_files[BIG_SHARD]


def test_unknown_model_is_a_clear_bad_input(hub):
    with pytest.raises(BadInputError) as err:
        hub_download.download_model("nobody/no-such-model")
    assert "nobody/no-such-model not found on the Hub" in str(err.value)
    assert "owner/name" in err.value.hint


def test_bad_model_id_is_rejected_before_any_request(hub):
    with pytest.raises(BadInputError):
        hub_download.download_model("not-an-id")
    assert hub.log == []


def test_gated_model_needs_license_and_token(hub, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(NetworkError) as err:
        hub_download.download_model(GATED)
    assert "gated" in str(err.value) and "accept the license" in err.value.hint and "HF_TOKEN" in err.value.hint
    bad = "hf_bad_" + "y" * 20
    with pytest.raises(NetworkError) as err:
        hub_download.download_model(GATED, token=bad)
    assert "not been granted" in str(err.value)
    assert bad not in str(err.value) + err.value.hint + caplog.text
    hub.log.clear()
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    result = hub_download.download_model(GATED)
    assert (result.path / "config.json").is_file()
    assert GOOD_TOKEN not in caplog.text
    hub_reqs = [r for r in hub.log if r["role"] == "hub"]
    cdn_reqs = [r for r in hub.log if r["role"] == "cdn"]
    assert hub_reqs and all(r["authorization"] == f"Bearer {GOOD_TOKEN}" for r in hub_reqs)
    assert cdn_reqs and all(r["authorization"] is None for r in cdn_reqs)  # never sent off the Hub


def test_private_model_without_token_reads_as_not_found_with_a_token_hint(hub):
    with pytest.raises(BadInputError) as err:
        hub_download.download_model(PRIVATE)
    assert "not found" in str(err.value) and "HF_TOKEN" in err.value.hint
    assert hub_download.download_model(PRIVATE, token=GOOD_TOKEN).source == "hub"


def test_disk_full_is_reported_before_a_byte_is_written(hub, tiny_files, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 5_000_000, 5_000_000))
    with pytest.raises(DiskFullError) as err:
        hub_download.download_model(TINY)
    assert f"needs {sum(map(len, tiny_files.values())) / 1e6:.1f} MB" in str(err.value) and "--dir" in err.value.hint
    assert not _models(tmp_path).exists()  # nothing created, not even the staging folder
    assert not [r for r in hub.log if r["role"] == "cdn"]


def test_cancel_before_start_writes_no_model(hub, tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        hub_download.download_model(TINY, cancel=cancel)
    assert not (_models(tmp_path) / "bitsmith-test--tiny-llama").exists()
    assert not [r for r in hub.log if "/resolve/" in r["path"] and not r["path"].endswith(".json")]


def test_cancel_from_the_progress_callback(hub):
    def stop(p):
        if p.done > 0:
            raise CancelledError("stop")

    with pytest.raises(CancelledError):
        hub_download.download_model(TINY, progress=stop)
    assert hub_download.download_model(TINY).source == "hub"


def test_pickles_are_refused_unless_allowed(hub):
    with pytest.raises(UnsupportedModelError) as err:
        hub_download.download_model(PICKLE)
    assert "pytorch_model.bin" in str(err.value) and "--allow-pickle" in err.value.hint
    result = hub_download.download_model(PICKLE, allow_pickle=True)
    assert "pytorch_model.bin" in result.files and (result.path / "pytorch_model.bin").is_file()


def test_existing_foreign_folder_is_never_overwritten(hub, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(BadInputError):
        hub_download.download_model(TINY, dest=target)
    assert (target / "notes.txt").read_text() == "keep me"
    result = hub_download.download_model(TINY, dest=tmp_path / "elsewhere")
    assert result.path == tmp_path / "elsewhere" and (result.path / "config.json").is_file()


# -- offline ------------------------------------------------------------------------------------------------


def test_offline_serves_a_previous_download(hub, monkeypatch):
    first = hub_download.download_model(TINY)
    hub.log.clear()
    _go_offline(monkeypatch)
    again = hub_download.download_model(TINY)
    assert again.path == first.path and again.source == "local" and "offline" in again.notes[0]
    assert hub.log == []


def test_offline_serves_a_complete_huggingface_cache_snapshot(hub, tiny_files, monkeypatch):
    from huggingface_hub import snapshot_download

    snap = Path(snapshot_download(TINY, allow_patterns=["*.json", "*.safetensors", "*.jinja"], endpoint=hub.url))
    _go_offline(monkeypatch)
    result = hub_download.download_model(TINY)
    assert result.source == "hf-cache" and result.path == snap
    assert (result.path / BIG_SHARD).read_bytes() == tiny_files[BIG_SHARD]


def test_offline_says_what_is_missing(hub, monkeypatch):
    cancel = threading.Event()
    with pytest.raises(CancelledError):
        hub_download.download_model(TINY, cancel=cancel,
                                    progress=lambda p: p.file == BIG_SHARD and p.file_done and cancel.set())
    _go_offline(monkeypatch)
    with pytest.raises(NetworkError) as err:
        hub_download.download_model(TINY)
    message = str(err.value)
    assert "offline" in message and "partly downloaded" in message and BIG_SHARD in message
    assert "config.json" not in message.split("missing:")[1]  # finished files are not listed
    with pytest.raises(NetworkError) as err:
        hub_download.download_model("bitsmith-test/never-downloaded")
    assert "not downloaded" in str(err.value) and "HF_HUB_OFFLINE" in err.value.hint


def test_network_down_falls_back_to_the_local_copy(hub, monkeypatch):
    first = hub_download.download_model(TINY)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{dead}")
    again = hub_download.download_model(TINY)
    assert again.path == first.path and "cannot reach the Hub" in again.notes[0]
    with pytest.raises(NetworkError) as err:
        hub_download.download_model("bitsmith-test/never-downloaded")
    assert "cannot reach the Hub" in str(err.value)


# -- search, card, fit --------------------------------------------------------------------------------------


def _add_search_repos(hub) -> dict[str, dict]:
    rng = random.Random()
    specs = {}
    for i in range(8):
        repo_id = f"{rng.choice(['acme', 'zeta'])}/model-{i}-{'chat' if i % 2 else 'base'}"
        params = rng.choice([135, 500, 1500, 3000, 7000, 14000]) * 10**6 + i
        specs[repo_id] = dict(
            downloads=rng.randrange(10**6), likes=rng.randrange(1000),
            last_modified=f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 28):02d}T00:00:00.000Z",
            params={"BF16": params}, license=rng.choice(["mit", "apache-2.0"]),
            library=rng.choice(["transformers", "mlx"]),
        )
        hub.add(repo_id, {}, **specs[repo_id])
    hub.add("acme/image-model", {}, pipeline_tag="image-classification", params={"F32": 10**9}, downloads=10**9)
    return specs


@pytest.mark.parametrize("sort,field", [("downloads", "downloads"), ("likes", "likes"),
                                        ("recent", "last_modified")])
def test_search_sorts_and_keeps_to_text_generation(hub, sort, field):
    from bitsmith.engine.hub import search_models

    specs = _add_search_repos(hub)
    models = search_models(sort=sort, limit=50)
    ids = [m.id for m in models]
    assert "acme/image-model" not in ids and set(specs) <= set(ids)
    values = [getattr(m, field) for m in models]
    assert values == sorted(values, reverse=True)
    query = hub.requests("GET", "/api/models")[-1]["query"]
    assert query["pipeline_tag"] == ["text-generation"]
    assert {"safetensors", "gated", "downloads", "likes", "tags", "lastModified"} <= set(query["expand"])


def test_search_filters(hub):
    from bitsmith.engine.hub import search_models

    specs = _add_search_repos(hub)
    total = lambda s: sum(s["params"].values())  # noqa: E731
    got = search_models(min_params="1B", max_params="8B", limit=50)
    want = {r for r, s in specs.items() if 10**9 <= total(s) <= 8 * 10**9}
    assert {m.id for m in got} == want
    got = search_models(author="acme", license="mit", library="transformers", limit=50)
    want = {r for r, s in specs.items() if r.startswith("acme/") and s["license"] == "mit"
            and s["library"] == "transformers"}
    assert {m.id for m in got} == want
    got = search_models("CHAT", limit=50)
    assert {m.id for m in got} == {r for r in specs if "chat" in r}
    assert len(search_models(limit=3)) == 3
    one = next(m for m in search_models(limit=50) if m.id in specs)
    spec = specs[one.id]
    assert one.params == total(spec) and one.size_bytes == 2 * total(spec)  # BF16: 2 bytes a parameter
    assert one.license == spec["license"] and one.library == spec["library"] and one.gated is False


def test_search_reports_gated_and_rejects_bad_input(hub):
    from bitsmith.engine.hub import search_models

    gated = search_models("gated")
    assert [m.id for m in gated] == [GATED] and gated[0].gated and gated[0].license == "llama3"
    with pytest.raises(BadInputError):
        search_models(min_params="lots")
    with pytest.raises(BadInputError):
        search_models(min_params="8B", max_params="1B")
    with pytest.raises(BadInputError):
        search_models(sort="random")


def test_search_offline_is_a_network_error(hub, monkeypatch):
    from bitsmith.engine.hub import search_models

    _go_offline(monkeypatch)
    with pytest.raises(NetworkError):
        search_models("llama")


def test_model_card_summary(hub, tiny_files):
    from bitsmith.engine.hub import model_card

    card = model_card(TINY)
    assert card.summary.startswith("A tiny Llama model with random weights")
    assert "license:" not in card.summary and "#" not in card.summary and "badge" not in card.summary
    assert "not meant to say anything sensible" in card.summary and "Usage" not in card.summary
    assert card.license == "apache-2.0" and card.gated is False and "llama" in card.tags
    sizes = dict(card.files)
    assert sizes[BIG_SHARD] == len(tiny_files[BIG_SHARD]) and sizes["config.json"] == len(tiny_files["config.json"])
    gated = model_card(GATED)
    assert gated.gated and gated.summary == ""  # the card text itself is behind the gate here
    with pytest.raises(BadInputError):
        model_card("nobody/nothing")


def test_card_summary_skips_markup():
    from bitsmith.engine.hub import card_summary

    words = " ".join(random.choice(["alpha", "beta", "gamma"]) for _ in range(12))
    text = (f"---\nlicense: mit\n---\n# Title\n\n[![b](x)](y)\n\n<div>html</div>\n\n```\ncode\n\ncode\n```\n\n"
            f"{words}\nsecond line.\n\n| a | b |\n\nNext para.\n\nThird.")
    assert card_summary(text) == f"{words} second line.\n\nNext para."
    assert card_summary("plain " * 400, max_chars=50).endswith("…")


def test_fit_uses_config_and_safetensors_headers_only(hub, tiny_files, monkeypatch):
    """The wiring to bitsmith.engine.plan, checked with stand-ins that record what they are given."""
    from safetensors import safe_open

    from bitsmith.engine import hub as hub_mod

    seen = {}

    class FakeInfo:
        @classmethod
        def from_config(cls, config, tensors, model_id):
            seen.update(config=config, tensors=tensors, model_id=model_id)
            return cls()

    verdict = random.choice(["gpu", "offload", "cpu", "no_fit"])
    gap = round(random.uniform(-5, 5), 2)
    stage = types.SimpleNamespace(verdict=verdict, gap_gb=gap)
    monkeypatch.setitem(sys.modules, "bitsmith.engine.modelinfo", types.SimpleNamespace(ModelInfo=FakeInfo))
    monkeypatch.setitem(sys.modules, "bitsmith.engine.plan", types.SimpleNamespace(
        plan_model=lambda info, bpw, hw: types.SimpleNamespace(stages={"chat": stage})))
    monkeypatch.setitem(sys.modules, "bitsmith.engine.hardware", types.SimpleNamespace(detect=lambda: "hw"))
    import bitsmith.engine as engine_pkg

    for name in ("modelinfo", "plan", "hardware"):
        monkeypatch.setattr(engine_pkg, name, sys.modules[f"bitsmith.engine.{name}"], raising=False)

    models = hub_mod.search_models("llama", bpw=2.5)
    by_id = {m.id: m for m in models}
    assert by_id[TINY].fit == hub_mod.FitResult(verdict, gap, 2.5)
    assert by_id[GATED].fit is None and "gated" in by_id[GATED].fit_note
    assert seen["model_id"] == TINY and seen["config"] == json.loads(tiny_files["config.json"])
    import tempfile

    expected = {}
    with tempfile.TemporaryDirectory() as d:
        for name in (BIG_SHARD, "model-00002-of-00002.safetensors"):
            (Path(d) / name).write_bytes(tiny_files[name])
            with safe_open(Path(d) / name, "pt") as f:
                for key in f.keys():
                    sl = f.get_slice(key)
                    expected[key] = (list(sl.get_shape()), sl.get_dtype())
    assert seen["tensors"] == expected
    # Only headers were read: no full GET of a weight file.
    weight_gets = [r for r in hub.log if r["role"] == "cdn" and r["path"].endswith(".safetensors")]
    assert weight_gets and all(r["range"] and r["range"].startswith("bytes=0-") for r in weight_gets)
    assert not list(Path(hub_download.default_dest(TINY)).parent.glob("*"))


def test_fit_with_the_real_planner(hub):
    pytest.importorskip("bitsmith.engine.modelinfo", reason="bitsmith.engine.modelinfo not written yet")
    pytest.importorskip("bitsmith.engine.plan", reason="bitsmith.engine.plan not written yet")
    pytest.importorskip("bitsmith.engine.hardware", reason="bitsmith.engine.hardware not written yet")
    from bitsmith.engine.hub import fit_for, search_models

    fit = fit_for(TINY, 2.5)
    assert fit.verdict in {"gpu", "offload", "cpu", "no_fit"} and fit.bpw == 2.5
    models = {m.id: m for m in search_models("tiny", bpw=4.0)}
    assert models[TINY].fit is not None and models[TINY].fit.verdict in {"gpu", "offload", "cpu", "no_fit"}


# -- CLI ------------------------------------------------------------------------------------------------------


def test_cli_table_shows_size_and_fit():
    from datetime import datetime, timezone

    from bitsmith.engine.commands.search import render_table
    from bitsmith.engine.hub import FitResult, HubModel

    params = random.randrange(10**9, 9 * 10**9)
    gap = round(random.uniform(0.5, 9.5), 1)
    base = dict(author="a", downloads=1234567, likes=89, params=params, license="mit", gated=False,
                library="transformers", last_modified=datetime(2024, 5, 6, tzinfo=timezone.utc),
                size_bytes=2 * params)
    models = [
        HubModel(id="a/fits", **base, fit=FitResult("gpu", -1.0, 2.5)),
        HubModel(id="a/spills", **base, fit=FitResult("offload", gap, 2.5)),
        HubModel(id="a/big", **base, fit=FitResult("no_fit", gap, 2.5)),
        HubModel(id="a/unknown", **{**base, "gated": True}, fit_note="a/unknown is gated"),
    ]
    lines = render_table(models, 2.5).splitlines()
    assert lines[0].split() == ["MODEL", "PARAMS", "WEIGHTS", "FIT@2.5bpw", "DOWNLOADS", "LIKES", "LICENSE",
                                "UPDATED"]
    row = dict(zip(["fits", "spills", "big", "unknown"], lines[1:5]))
    assert f"{2 * params / 1e9:.1f} GB" in row["fits"] and f"{params / 1e9:.3g}B" in row["fits"]
    assert " gpu " in row["fits"] and "2024-05-06" in row["fits"] and "1.23M" in row["fits"]
    assert f"offload {gap:.1f} GiB" in row["spills"] and f"no fit ({gap:.1f} GiB short)" in row["big"]
    assert "[gated]" in row["unknown"] and " ? " in row["unknown"] and lines[-1] == "? a/unknown is gated"


def test_cli_search_table_and_json(hub, capsys):
    from bitsmith.engine.cli import main

    specs = _add_search_repos(hub)
    assert main(["search", "--sort", "likes", "--no-fit", "--limit", "50"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["MODEL", "PARAMS", "WEIGHTS"]
    assert any(line.startswith(GATED + " [gated]") for line in table)
    assert main(["search", "model", "--min-params", "1B", "--json", "--no-fit", "--limit", "50"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in rows} == {r for r, s in specs.items() if sum(s["params"].values()) >= 10**9}
    assert all(r["fit"] is None for r in rows)


def test_cli_download_prints_the_folder(hub, tmp_path, capsys):
    from bitsmith.engine.cli import main

    target = tmp_path / "here"
    assert main(["download", TINY, "--dir", str(target)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(target) and "files" in err  # the bar went to stderr
    assert main(["download", TINY, "--dir", str(target), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["source"] == "local" and payload["path"] == str(target)
    assert main(["download", "nobody/nothing"]) == 2
    err = capsys.readouterr().err
    assert "not found on the Hub" in err and "what to do" in err


def test_download_job_reports_byte_progress_and_the_folder(hub, tmp_path, monkeypatch):
    """The worker's `download` job: byte progress events, a model artifact, and a result with the path."""
    from bitsmith.engine.jobclient import run_inprocess

    monkeypatch.setenv("BITSMITH_HOME", str(tmp_path / "home"))
    events: list[dict] = []
    code = run_inprocess("download", {"model": TINY}, events.append)
    assert code == 0, events[-3:]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] > 0
    assert [e["done"] for e in progress] == sorted(e["done"] for e in progress)
    result = next(e for e in events if e["event"] == "result")
    assert (Path(result["path"]) / "config.json").is_file()
    assert any(e["event"] == "artifact" and e["kind"] == "model" for e in events)
    bad: list[dict] = []
    assert run_inprocess("download", {}, bad.append) == 2
    assert any(e["event"] == "error" and e["kind"] == "bad_input" for e in bad)
