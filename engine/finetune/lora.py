"""The LoRA-on-quantized baseline (QLoRA's recipe): frozen QuantLinears plus trainable low-rank adapters.

y = deq(W) x + (alpha / r) · B A x, with A [r, K] initialised Kaiming-uniform (seeded) and B [N, r] at
zero, so training starts from the quantized model exactly. Adapters are fp32. To ship the result at the
same bpw, `merge` folds B A into the weight and re-rounds the codes against the layer's own scales and
zeros: the folder then loads like any other, but the re-rounding loses part of what the adapters learnt
(the job reports the held-out loss before and after merging).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bitsmith.engine.quant.linear import QuantLinear
from bitsmith.engine.quant.rtn import quantize_codes
from bitsmith.engine.quant.store import set_submodule
from bitsmith.kernels.pack import pack_codes


class LoRALinear(nn.Module):
    """A frozen QuantLinear with a trainable low-rank update."""

    def __init__(self, base: QuantLinear, rank: int, alpha: float, *, generator: torch.Generator | None = None,
                 name: str = "") -> None:
        super().__init__()
        if rank <= 0:
            raise ValueError(f"the LoRA rank must be positive, got {rank}")
        self.base, self.name, self.rank = base, name, rank
        self.scaling = alpha / rank
        device = base.qweight.device
        a = torch.empty(rank, base.in_features, dtype=torch.float32)
        bound = 1.0 / math.sqrt(base.in_features)  # kaiming_uniform_(a=sqrt(5)), as nn.Linear and PEFT do
        a.uniform_(-bound, bound, generator=generator)
        self.lora_a = nn.Parameter(a.to(device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=torch.float32, device=device))
        self.compute_dtype: torch.dtype | None = None  # CPU matmul dtype (None: fp32), as QSFTLinear's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantized path plus the scaled adapter path."""
        cd = self.compute_dtype
        if cd is None or x.is_cuda:
            y = self.base(x)
            lora = (x.to(self.lora_a.dtype) @ self.lora_a.t()) @ self.lora_b.t()
            return y + (lora * self.scaling).to(y.dtype)
        xc = x.to(cd)
        y = xc @ self.base.dequantize_t().to(cd)
        if self.base.bias is not None:
            y = y + self.base.bias.to(cd)
        lora = (xc @ self.lora_a.to(cd).t()) @ self.lora_b.to(cd).t()
        return (y + lora * self.scaling).to(x.dtype)

    @torch.no_grad()
    def merge(self) -> QuantLinear:
        """Fold the adapter into the codes (re-rounded against the layer's statistics) and return the layer."""
        base = self.base
        w = base.dequantize(torch.float32) + self.scaling * (self.lora_b @ self.lora_a)
        codes = quantize_codes(w, base.scales, base.zeros, base.spec)
        base.qweight.copy_(pack_codes(codes, base.spec.bits))
        return base


def add_adapters(model: nn.Module, rank: int, alpha: float, seed: int = 0) -> dict[str, LoRALinear]:
    """Wrap every QuantLinear of `model` with an adapter (in place, in module order); returns them by name."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, mod in list(model.named_modules()):
        if isinstance(mod, QuantLinear):
            layer = LoRALinear(mod, rank, alpha, generator=gen, name=name)
            set_submodule(model, name, layer)
            out[name] = layer
    return out


def remove_adapters(model: nn.Module, merge: bool) -> int:
    """Replace every LoRALinear by its QuantLinear, merged into the codes or not; returns how many."""
    count = 0
    for name, mod in list(model.named_modules()):
        if isinstance(mod, LoRALinear):
            set_submodule(model, name, mod.merge() if merge else mod.base)
            count += 1
    return count
