"""A dense copy of a quantized model for fast CPU generation: same weights, dequantized once.

On the CPU the QuantLinear torch path dequantizes its weight on every call; during token-by-token
generation that costs more than the matmul. Dequantizing once into plain nn.Linear modules gives
the same weights (fp32, exactly what the torch path computes with) at fp32 memory cost.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .mixed_linear import quant_modules
from .store import set_submodule


def dense_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with every quantized layer (QuantLinear, ChannelMixLinear) replaced by an nn.Linear
    of its dequantized weight."""
    dense = copy.deepcopy(model)
    for name, mod in quant_modules(dense).items():
        lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None, device="meta")
        lin.weight = nn.Parameter(mod.dequantize(torch.float32), requires_grad=False)
        if mod.bias is not None:
            lin.bias = nn.Parameter(mod.bias.float(), requires_grad=False)
        set_submodule(dense, name, lin)
    return dense
