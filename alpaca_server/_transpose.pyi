"""Types of the compiled transpose (alpaca_server/_transpose.c, built by setup.py)."""

import numpy as np

#: Which kernel the build selected (e.g. "sse2", "neon", "scalar").
KERNEL: str

def swap_axes(src: np.ndarray, dst: np.ndarray, x0: int, x1: int, simd: bool = True) -> None:
    """Write columns [x0, x1) of the 2-D ``src`` as rows [x0, x1) of ``dst`` (its transpose); releases the GIL."""
