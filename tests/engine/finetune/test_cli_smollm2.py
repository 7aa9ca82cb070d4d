"""`bitsmith finetune` on the real SmolLM2-135M (INT4 by RTN), then `bitsmith eval` and `bitsmith chat` on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_int4(bundled_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct with every block linear at INT4/g128 (RTN), saved as a Bitsmith folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bitsmith.engine.model import find_blocks
    from bitsmith.engine.quant.linear import QuantLinear
    from bitsmith.engine.quant.store import round_kept_, save_quantized, set_submodule

    model = AutoModelForCausalLM.from_pretrained(bundled_folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(bundled_folder)
    round_kept_(model)
    for block in find_blocks(model):
        for name, lin in block.linears.items():
            set_submodule(model, f"{block.name}.{name}", QuantLinear.from_linear(lin, "int4_g128"))
    return save_quantized(model, tok, tmp_path_factory.mktemp("smol") / "smol-int4", source={"model": "bundled"})


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bitsmith.engine", *args], capture_output=True, text=True, env=env,
                          timeout=1200)


def test_finetune_then_eval_and_chat_with_no_extra_step(smol_int4: Path, tmp_path: Path, write_jsonl) -> None:
    rows = [{"instruction": f"What is {a} plus {b}?", "output": f"{a} plus {b} is {a + b}."}
            for a in range(7) for b in range(5)]
    data = write_jsonl(tmp_path / "sums.jsonl", rows)
    out = tmp_path / "smol-ft"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = _cli("finetune", str(smol_int4), "--data", str(data), "--out", str(out), "--steps", "3", "--seq-len", "128",
                "--eval-every", "0", "--eval-tokens", "512", "--threads", "1", "--json", env=env)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"train_loss", "heldout_loss_before", "heldout_loss_after"} <= set(last)
    assert last["heldout_loss_after"] < last["heldout_loss_before"]
    meta = json.loads((out / "bitsmith.json").read_text())
    assert meta["bpw"] == json.loads((smol_int4 / "bitsmith.json").read_text())["bpw"]

    ev = _cli("eval", str(out), "--max-tokens", "256", "--window", "128", "--json", env=env)
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads(ev.stdout.strip().splitlines()[-1])["ppl"] > 1

    chat = _cli("chat", str(out), "--prompt", "What is 2 plus 3?", "--max-tokens", "8", "--temperature", "0",
                "--device", "cpu", env=env)
    assert chat.returncode == 0, chat.stderr[-2000:]
    assert chat.stdout.strip()
