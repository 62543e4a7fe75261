"""Shapiro-Wilk W for the PRADA extraction test, as a numba kernel.

Coefficients follow Royston's approximation (Applied Statistics algorithm R94), which is
what common statistics libraries use for 12 <= n <= 5000. They depend only on ``n``, so
they are computed once per sample size in Python and the kernel only sorts and sums.

>>> import numpy as np
>>> a = shapiro_coefficients(200)
>>> rng = np.random.default_rng(0)
>>> bool(shapiro_w(np.sort(rng.normal(size=200)), a) > 0.98)
True
>>> bool(shapiro_w(np.sort(rng.exponential(size=200)), a) < 0.9)
True
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numba
import numpy as np

_C1 = (0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056)
_C2 = (0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633)


def _poly(c: tuple[float, ...], u: float) -> float:
    return sum(ci * u**i for i, ci in enumerate(c))


def shapiro_coefficients(n: int) -> np.ndarray:
    """The ``n`` weights ``a_i`` of W (antisymmetric, for ascending order statistics)."""
    if n < 12:
        raise ValueError(f"Shapiro-Wilk coefficients need n >= 12, got {n}")
    inv = NormalDist().inv_cdf
    m = np.array([inv((i - 0.375) / (n + 0.25)) for i in range(1, n + 1)])
    mm = float(m @ m)
    u = 1.0 / math.sqrt(n)
    a = np.empty(n)
    an = m[-1] / math.sqrt(mm) + _poly(_C1, u)
    an1 = m[-2] / math.sqrt(mm) + _poly(_C2, u)
    phi = (mm - 2 * m[-1] ** 2 - 2 * m[-2] ** 2) / (1 - 2 * an**2 - 2 * an1**2)
    a[:] = m / math.sqrt(phi)
    a[-1], a[-2] = an, an1
    a[0], a[1] = -an, -an1
    return a


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def shapiro_w(x_sorted, a):
    """W of an ascending sample with coefficients ``a`` of the same length (1.0 if constant)."""
    n = x_sorted.shape[0]
    mean = 0.0
    for i in range(n):
        mean += x_sorted[i]
    mean /= n
    ss = 0.0
    num = 0.0
    for i in range(n):
        dv = x_sorted[i] - mean
        ss += dv * dv
        num += a[i] * x_sorted[i]
    if ss <= 0.0:
        return 1.0
    w = num * num / ss
    return w if w < 1.0 else 1.0
