"""Every quant test starts from a fresh random seed (printed, so a failure can be replayed)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def fresh_seed() -> None:
    seed = torch.seed()  # reseeds torch's global generator from the OS
    print(f"torch seed: {seed} (replay with torch.manual_seed)")
