"""Optimizers that run inside the backward pass: whole-step code moves, and Adam for the float parameters.

`CodeOptimizer` — the rule for packed codes. For each block of dW it forms the gradient in code units,
g = dL/dq = dW · s (one code step moves the weight by s), normalises it Adafactor-style by a factored
second moment (an EMA per output row and per input column: O(N + K) floats per layer, no per-weight
moment), clips the update's RMS to 1, and adds Δ = -lr · u (in code steps) to a per-weight *residual*:
the fractional part of the weight's position between codes, stored in `residual_bits` bits (4 by default:
sixteenths of a step, two weights per byte). Δ is added by stochastic rounding to the residual's grid, so
small updates are kept in expectation instead of being rounded away; when the position crosses a half
step the code moves by one and the residual wraps. Codes are clamped to [0, 2^b - 1] (the residual then
saturates), so the format and the bpw never change. `max_move_frac` optionally ranks the codes that want
to move in a block by their accumulated signal and moves only that fraction, DiodeMix's "rank, move".

Memory price: residual_bits / 8 bytes per quantized weight (0.5 B at 4 bits; 0 with residual_bits=0,
which is plain stochastic rounding of every update into the codes), plus N + K floats per layer.

`InBackwardAdam` — Adam (fp32 moments, an fp32 master copy for parameters stored in 16 bits) applied by a
post-accumulate-grad hook as soon as a parameter's gradient is complete, then the gradient is freed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from bitsmith.engine.quant.pack import scatter_code_deltas

RESIDUAL_BITS = (0, 4, 8)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float = 0.1) -> float:
    """Learning-rate multiplier at 0-based `step`: linear warm-up over `warmup` steps, then cosine to min_ratio."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---- residual storage (in the packed words' layout [K, N]) --------------------------------------------

def residual_shape(out_features: int, in_features: int, bits: int) -> tuple[int, int]:
    """Stored residual shape of a [N, K] layer: uint8 [ceil(K/2), N] (two nibbles) at 4 bits, uint8 [K, N] at 8."""
    return ((in_features + 1) // 2, out_features) if bits == 4 else (in_features, out_features)


def unpack_residual(stored: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Stored residual (columns of any slice) -> int32 [K, R] offset values o = residual + 2^(bits-1) in [0, 2^bits)."""
    s = stored.to(torch.int32)
    if bits == 8:
        return s
    return torch.stack([s & 0xF, s >> 4], dim=1).reshape(-1, s.shape[1])[:in_features]


def pack_residual(values: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 [K, R] offset values in [0, 2^bits) -> stored form (inverse of unpack_residual)."""
    if bits == 8:
        return values.to(torch.uint8)
    v = values
    if v.shape[0] % 2:
        v = torch.cat([v, v.new_full((1, v.shape[1]), 8)])
    v = v.view(-1, 2, v.shape[1])
    return (v[:, 0] | (v[:, 1] << 4)).to(torch.uint8)


def scatter_codes(qweight: torch.Tensor, r0: int, old: torch.Tensor, new: torch.Tensor, moved: torch.Tensor,
                  bits: int) -> None:
    """Write changed codes (int32 [K, R] blocks of columns r0:) into the packed words in place (any width)."""
    k_idx, r_idx = moved.nonzero(as_tuple=True)
    scatter_code_deltas(qweight, r0, k_idx, r_idx, old[k_idx, r_idx], new[k_idx, r_idx], bits)


class CodeOptimizer:
    """Moves packed codes by whole steps from blocks of dW (see the module docstring)."""

    def __init__(self, lr: float, *, residual_bits: int = 4, beta2: float = 0.999, eps: float = 1e-30,
                 clip: float = 1.0, max_move_frac: float | None = None, decay: float = 0.0,
                 seed: int = 0) -> None:
        if residual_bits not in RESIDUAL_BITS:
            raise ValueError(f"residual_bits must be one of {RESIDUAL_BITS}, got {residual_bits}")
        if lr < 0:
            raise ValueError(f"the code learning rate must be >= 0, got {lr}")
        if max_move_frac is not None and not 0.0 < max_move_frac <= 1.0:
            raise ValueError(f"max_move_frac must be in (0, 1], got {max_move_frac}")
        self.lr, self.residual_bits, self.beta2, self.eps, self.clip = lr, residual_bits, beta2, eps, clip
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the residual decay must be in [0, 1), got {decay}")
        self.max_move_frac, self.decay = max_move_frac, decay
        self.seed = seed
        self.lr_scale = 1.0  # schedule factor × 1/accumulation, set by the trainer each step
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self._generators: dict[str, torch.Generator] = {}
        self.bad = False  # a non-finite dW was seen: no further moves until reset
        self.moved = 0
        self.seen = 0

    @property
    def bytes_per_weight(self) -> float:
        """Optimizer state per quantized weight, in bytes (the residual)."""
        return self.residual_bits / 8

    def generator(self, device: torch.device) -> torch.Generator:
        """The stochastic-rounding generator of `device` (seeded, part of the checkpoint)."""
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def _layer_state(self, layer) -> dict[str, torch.Tensor]:  # noqa: ANN001 - QSFTLinear
        st = self.state.get(layer.name)
        if st is None:
            dev = layer.base.qweight.device
            n, k = layer.out_features, layer.in_features
            st = {"v_row": torch.zeros(n, device=dev), "v_col": torch.zeros(k, device=dev),
                  "col_acc": torch.zeros(k, device=dev), "t": torch.zeros((), dtype=torch.int64),
                  "t_col": torch.zeros((), dtype=torch.int64)}
            if self.residual_bits:
                fill = 0x88 if self.residual_bits == 4 else 0x80  # offset form: residual 0 = half a step
                st["residual"] = torch.full(residual_shape(n, k, self.residual_bits), fill, dtype=torch.uint8,
                                            device=dev)
            self.state[layer.name] = st
        return st

    @torch.no_grad()
    def step_rows(self, layer, r0: int, r1: int, dwt: torch.Tensor, codes: torch.Tensor,  # noqa: ANN001
                  scales: torch.Tensor) -> None:
        """Apply dW^T of output columns r0:r1 (fp32 [K, R], consumed) to their codes (int32 [K, R], old)."""
        if self.bad:
            return
        st = self._layer_state(layer)
        spec = layer.spec
        k, n, g = layer.in_features, layer.out_features, spec.group_size
        groups = scales.shape[0]
        if r0 == 0:
            st["t"] += 1
            st["col_acc"].zero_()
        # gradient in code units, dL/dq = dW · s of the weight's group, in place of dW
        full = groups * g == k
        gq = dwt.view(groups, g, -1) if full else torch.cat([dwt, dwt.new_zeros(groups * g - k, dwt.shape[1])])
        gq = gq.view(groups, g, -1).mul_(scales[:, None, :]).view(groups * g, -1)[:k]
        beta = self.beta2
        sq = gq.square()
        col_sq, row_sq = sq.sum(1), sq.sum(0)  # [K], [R]
        del sq
        if not (bool(torch.isfinite(row_sq).all()) and bool(torch.isfinite(col_sq).all())):
            self.bad = True
            return
        st["v_row"][r0:r1].mul_(beta).add_(row_sq / k, alpha=1 - beta)
        st["col_acc"].add_(col_sq)
        rs_row = (st["v_row"][r0:r1] / (1 - beta ** int(st["t"]))).add_(self.eps).rsqrt_()
        if int(st["t_col"]) > 0:
            v_col = st["v_col"] / (1 - beta ** int(st["t_col"]))
        else:  # the layer's first step: columns from this block alone
            v_col = col_sq / (r1 - r0)
        rs_col = (v_col / v_col.mean().clamp(min=self.eps)).add_(self.eps).rsqrt_()
        u = gq.mul_(rs_col[:, None]).mul_(rs_row[None, :])
        rms = float(torch.linalg.vector_norm(u)) / math.sqrt(u.numel())
        unit = 1 << self.residual_bits
        # the update in 1/256 residual units
        u.mul_(-self.lr * self.lr_scale * unit * 256.0 / max(1.0, rms / self.clip))
        self._move(layer, st, r0, codes, u, spec.maxq)
        if r1 == n:
            st["v_col"].mul_(beta).add_(st["col_acc"] / n, alpha=1 - beta)
            st["t_col"] += 1

    def _move(self, layer, st: dict[str, torch.Tensor], r0: int, q: torch.Tensor,  # noqa: ANN001
              delta: torch.Tensor, maxq: int) -> None:
        """Round `delta` (in 1/256 residual units) stochastically into residual and codes; repack moved codes.

        With the residual stored offset by half a step (o = residual + unit/2, in [0, unit)), the position
        t = q·unit + o + Δ clamped to the codes' range gives the new code as t >> rb and the new residual as
        t & (unit - 1): a code moves when its position crosses a half step, and saturates at the ends.
        """
        rb = self.residual_bits
        unit = 1 << rb
        r1 = r0 + q.shape[1]
        if rb:
            o = unpack_residual(st["residual"][:, r0:r1], rb, q.shape[0])
            if self.decay:  # leaky accumulation: the residual relaxes toward the centre of its code's bin
                delta.add_(o - unit // 2, alpha=-self.decay * 256.0)
            t = self._stochastic_round(delta)
            t += o
            del o
            t.add_(q, alpha=unit).clamp_(0, (maxq + 1) * unit - 1)
            new = t >> rb
        else:
            t = self._stochastic_round(delta).add_(q)
            new = t.clamp(0, maxq)
        moving = new != q
        if self.max_move_frac is not None:
            cap = max(1, int(self.max_move_frac * q.numel()))
            count = int(moving.sum())
            if count > cap:  # rank the candidates by how far past the half step they are; move the top `cap`
                signal = (t - q * unit - unit // 2).abs_() if rb else (t - q).abs_()
                where = moving.nonzero(as_tuple=True)
                top = torch.topk(signal[where].to(torch.float32), cap, sorted=False).indices
                keep = torch.zeros_like(moving)
                keep[where[0][top], where[1][top]] = True
                held = moving & ~keep
                moving = keep
                new = torch.where(held, q, new)
                if rb:  # the held ones keep their position, saturated at the edge of their current bin
                    t = torch.where(held, (t - q * unit).clamp_(0, unit - 1) + q * unit, t)
        if rb:
            st["residual"][:, r0:r1] = pack_residual(t.bitwise_and_(unit - 1), rb)
        scatter_codes(layer.base.qweight, r0, q, new, moving, layer.spec.bits)
        self.moved += int(moving.sum())
        self.seen += q.numel()

    def _stochastic_round(self, fixed: torch.Tensor) -> torch.Tensor:
        """floor(x + U[0, 1)) as int32 for x = fixed / 256: `fixed` is rounded to an integer (unbiased to within
        1/512), 8 random bits are added and the sum is shifted down. Four draws per random int32."""
        n = fixed.numel()
        bits = torch.randint(-(2**31), 2**31 - 1, ((n + 3) // 4,), dtype=torch.int32,
                             generator=self.generator(fixed.device), device=fixed.device)
        noise = bits.view(torch.uint8)[:n].view(fixed.shape)
        return fixed.round_().to(torch.int32).add_(noise.to(torch.int32)).bitwise_right_shift_(8)

    def take_counts(self) -> tuple[int, int]:
        """(codes moved, codes seen) since the last call."""
        out = (self.moved, self.seen)
        self.moved = self.seen = 0
        return out

    # -- checkpoints ------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the optimizer, flat (for safetensors)."""
        out = {f"code.{name}.{key}": t for name, st in self.state.items() for key, t in st.items()}
        for dev, gen in self._generators.items():
            out[f"code_rng.{dev}"] = gen.get_state()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], layers: dict) -> None:
        """Inverse of state_tensors (layers: name -> QSFTLinear, for devices)."""
        self.state = {}
        for key, t in tensors.items():
            if key.startswith("code_rng."):
                dev = key.removeprefix("code_rng.")
                self.generator(torch.device(dev)).set_state(t.to(torch.uint8).cpu())
            elif key.startswith("code."):
                name, field = key.removeprefix("code.").rsplit(".", 1)
                device = layers[name].base.qweight.device if field not in ("t", "t_col") else "cpu"
                self.state.setdefault(name, {})[field] = t.to(device)


class InBackwardAdam:
    """Adam applied from each parameter's post-accumulate-grad hook; the gradient is freed right after."""

    def __init__(self, groups: Iterable[tuple[str, list[tuple[str, nn.Parameter]], float]],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, accumulate: int = 1) -> None:
        self.betas, self.eps = betas, eps
        self.accumulate = max(1, accumulate)
        self.micro = 0
        self.lr_scale = 1.0
        self.bad = False
        self.params: dict[str, tuple[nn.Parameter, float]] = {}
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self._handles = []
        for _group, named, lr in groups:
            for name, p in named:
                if not p.requires_grad:
                    continue
                self.params[name] = (p, lr)
                self._handles.append(p.register_post_accumulate_grad_hook(self._hook(name)))

    def _hook(self, name: str):  # noqa: ANN202 - a hook closure
        def run(p: nn.Parameter) -> None:
            if self.micro >= self.accumulate - 1:
                self._step(name, p)

        return run

    @torch.no_grad()
    def _step(self, name: str, p: nn.Parameter) -> None:
        grad = p.grad
        p.grad = None
        if grad is None or self.bad:
            return
        if not bool(torch.isfinite(grad).all()):
            self.bad = True
            return
        lr = self.params[name][1] * self.lr_scale
        st = self.state.get(name)
        if st is None:
            st = {"m": torch.zeros_like(p, dtype=torch.float32), "v": torch.zeros_like(p, dtype=torch.float32),
                  "t": torch.zeros((), dtype=torch.int64)}
            if p.dtype != torch.float32:
                st["master"] = p.detach().to(torch.float32).clone()
            self.state[name] = st
        b1, b2 = self.betas
        st["t"] += 1
        t = int(st["t"])
        g = grad.to(torch.float32)
        st["m"].mul_(b1).add_(g, alpha=1 - b1)
        st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (st["v"] / (1 - b2**t)).sqrt_().add_(self.eps)
        master = st.get("master", p)
        master.addcdiv_(st["m"], denom, value=-lr / (1 - b1**t))
        if "master" in st:
            p.copy_(master)

    def close(self) -> None:
        """Remove the hooks (after training)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the optimizer, flat."""
        return {f"adam.{name}.{key}": t for name, st in self.state.items() for key, t in st.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of state_tensors."""
        self.state = {}
        for key, t in tensors.items():
            name, field = key.removeprefix("adam.").rsplit(".", 1)
            device = "cpu" if field == "t" else self.params[name][0].device
            self.state.setdefault(name, {})[field] = t.to(device)
