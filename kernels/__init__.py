"""Low-bit matrix kernels (Triton) and their torch references. Imports neither engine nor app."""
