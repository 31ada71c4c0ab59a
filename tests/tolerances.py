"""Floating-point tolerances derived from the dtype, the depth of a computation and the values' magnitude.

Two correct float computations of the same function differ when they sum in
another order: another CPU's kernels (AVX2 or AVX-512, other BLAS blockings),
another batch shape, another device.  Each rounding adds at most half an ulp
relative to the value it produces, and the errors of a chain of layers add up,
so the bound used here is

    rtol = ulps * depth * eps(dtype)
    atol = rtol * max|expected|

``depth`` is the number of sequential reducing layers (matrix products,
convolutions, normalisations, recurrent steps) between input and output;
``ulps`` covers the growth inside one layer's reduction (a blocked or pairwise
sum of K terms grows by about log2(K) ulps: 16 covers K up to 65,536).  The
absolute floor is scaled to the values, so elements near zero in an output
whose others are large are held to the error their neighbours carry, not to an
impossible relative bound.  No constant here is tuned to one machine's result.
"""

from __future__ import annotations

import numpy as np

#: Rounding growth inside one layer's reduction, in ulps (log2 of reductions up to 2**16 terms).
LAYER_ULPS = 16


def float_tolerance(expected, depth: int, dtype=np.float32, ulps: int = LAYER_ULPS) -> tuple[float, float]:
    """(rtol, atol) for comparing results of a ``depth``-layer computation in ``dtype`` with ``expected``."""
    eps = float(np.finfo(dtype).eps)
    rtol = ulps * depth * eps
    magnitude = float(np.max(np.abs(np.asarray(expected, dtype=np.float64)), initial=0.0))
    return rtol, rtol * max(magnitude, float(np.finfo(dtype).tiny))


def assert_float_close(actual, expected, depth: int, dtype=np.float32, ulps: int = LAYER_ULPS) -> None:
    """``assert_allclose`` with :func:`float_tolerance`'s bound."""
    actual = np.asarray(actual.detach().cpu() if hasattr(actual, "detach") else actual, dtype=np.float64)
    expected = np.asarray(expected.detach().cpu() if hasattr(expected, "detach") else expected, dtype=np.float64)
    rtol, atol = float_tolerance(expected, depth, dtype, ulps)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def decided_by_margin(logits, tolerance: float) -> np.ndarray:
    """Rows whose top class leads the runner-up by more than ``tolerance``: their argmax cannot flip on rounding."""
    logits = np.asarray(logits.detach().cpu() if hasattr(logits, "detach") else logits, dtype=np.float64)
    top2 = np.sort(logits, axis=-1)[..., -2:]
    return (top2[..., 1] - top2[..., 0]) > tolerance
