"""GPU layers for llama.cpp from the fit planner: all, some or none, by free GPU memory."""

import pytest

from bitsmith.engine.hardware import CpuInfo, GpuInfo, HardwareProfile
from bitsmith.engine.modelinfo import ModelInfo
from bitsmith.engine.runtime.offload import choose_gpu_layers

GIB = 2**30
LLAMA3_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
             "max_position_embeddings": 8192, "tie_word_embeddings": False}


def _hw(free_gib: float | None) -> HardwareProfile:
    gpus = [] if free_gib is None else [GpuInfo(0, "RTX test", int(24 * GIB), int(free_gib * GIB), (8, 9))]
    return HardwareProfile(cpu=CpuInfo("cpu", "x86_64", 8, 16), ram_total_bytes=64 * GIB,
                           ram_available_bytes=60 * GIB, gpus=gpus)


@pytest.fixture(scope="module")
def info() -> ModelInfo:
    return ModelInfo.from_config(LLAMA3_8B)


def test_everything_on_a_big_gpu_nothing_without_one(info: ModelInfo) -> None:
    size = int(4.5 * GIB)
    assert choose_gpu_layers(info, size, _hw(22), 4096).n_gpu_layers == -1
    assert choose_gpu_layers(info, size, _hw(None), 4096).n_gpu_layers == 0
    assert choose_gpu_layers(info, size, _hw(22), 4096, gpu_build=False).n_gpu_layers == 0


def test_a_partial_fit_offloads_a_share_of_layers_that_grows_with_memory(info: ModelInfo) -> None:
    size = int(4.5 * GIB)
    layers = [choose_gpu_layers(info, size, _hw(free), 4096).n_gpu_layers for free in (2.5, 3.5, 4.5)]
    assert all(0 < n < info.num_layers for n in layers), layers
    assert layers == sorted(layers) and layers[0] < layers[-1]
    tiny = choose_gpu_layers(info, size, _hw(0.3), 4096)
    assert tiny.n_gpu_layers == 0 and "CPU" in tiny.reason
