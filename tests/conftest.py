"""Test-wide setup: Triton runs in its CPU interpreter unless a CUDA GPU is asked for explicitly."""

import os

# Must happen before anything imports triton. On a GPU machine run with BITSMITH_TEST_GPU=1.
if os.environ.get("BITSMITH_TEST_GPU") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
