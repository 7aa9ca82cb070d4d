"""What to try after running out of memory: the sequence length and bpw at which the planner says Q-SFT fits."""

from __future__ import annotations

from typing import Any

from bitsmith.engine.errors import BitsmithError

MIN_SEQ = 128


def _fits(verdict: str, accel_kind: str) -> bool:
    return verdict == ("gpu" if accel_kind != "cpu" else "cpu")


def oom_advice(config: dict[str, Any], bpw: float, seq_len: int, batch: int = 1, hw: Any = None) -> str:
    """A hint naming a sequence length (and, failing that, a bpw) at which the planner expects Q-SFT to fit."""
    from bitsmith.engine import plan as planner
    from bitsmith.engine.modelinfo import ModelInfo

    generic = f"use a shorter --seq-len (e.g. {max(MIN_SEQ, seq_len // 2)}) or close other programs using the GPU"
    try:
        if hw is None:
            from bitsmith.engine import hardware

            hw = hardware.detect()
        info = ModelInfo.from_config(config)
        kind = planner.accelerator(hw).kind
        bpw = min(max(bpw, planner.MIN_BPW), planner.MAX_BPW)
        tips = []
        seq = seq_len
        while seq > MIN_SEQ:
            seq //= 2
            est = planner.plan_model(info, bpw, hw, seq_len=seq, batch=batch).stages["qsft"]
            if _fits(est.verdict, kind):
                tips.append(f"--seq-len {seq} fits by the planner's estimate ({est.gpu_gb or est.cpu_gb:.1f} GiB)")
                break
        if batch > 1:
            tips.append("--batch 1 with --grad-accum to keep the same tokens per step")
        best = planner.max_bpw_that_fits(info, hw, "qsft", seq_len=seq_len, batch=batch)
        if best is not None and best < bpw:
            tips.append(f"a model quantized to {best:.2f} bpw or less would fit at --seq-len {seq_len}")
        elif not tips:  # neither a shorter sequence nor fewer bits alone: name a pair that fits
            seq = seq_len
            while seq > MIN_SEQ:
                seq //= 2
                low = planner.max_bpw_that_fits(info, hw, "qsft", seq_len=seq, batch=batch)
                if low is not None:
                    tips.append(f"--seq-len {seq} with a model quantized to {low:.2f} bpw or less fits by the "
                                "planner's estimate")
                    break
        if not tips:
            return generic
        return "; ".join(tips) + " (`bitsmith plan` shows the breakdown)"
    except (BitsmithError, ValueError, KeyError, TypeError, OSError):
        return generic
