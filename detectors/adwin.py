"""ADWIN change detection for one scalar stream, as a numba kernel over explicit state arrays.

Why: many inferwatch signals are per-model *summary streams* -- the running mean of one
feature, a model's error rate (0/1 per labelled event), the top-class confidence. ADWIN
(Bifet & Gavalda, 2007) watches such a stream with an adaptive window and flags the points
where the mean of the older part of the window differs significantly from the newer part.
``river.drift.ADWIN`` does this one Python call per value; this module processes a whole
block in one ``@numba.njit`` call and reports the same detection indices.

What: a port of river's ADWIN (river 0.26, whose core is the Rust ``AdaptiveWindowing``).
The window is an exponential histogram: row ``r`` holds up to ``max_buckets`` buckets that
each summarise ``2**r`` values (their sum and their sum of squared deviations). A new value
enters row 0; a row that reaches ``max_buckets + 1`` buckets merges its two oldest into one
bucket of the next row. Every ``clock`` values (once the window is longer than
``grace_period``) every cut of the window into an older part W0 and a newer part W1 is
tested; on a significant cut the oldest bucket is dropped, repeatedly, and a drift is
reported. As in river, the detector starts from an empty window on the value *after* a
detection. The floating point operations follow river's order so decisions match exactly.

State is a fixed set of numpy arrays (bounded memory, no Python objects):

* ``totals``, ``variances``: float64 ``(MAX_ROWS, max_buckets + 1)``, per-bucket sum and
  sum of squared deviations;
* ``counts``: int64 ``(MAX_ROWS,)``, buckets in use per row;
* ``fstate``: float64 ``(4,)``, window total, variance (sum of squared deviations), width,
  accumulated width;
* ``istate``: int64 ``(8,)``, rows in use, bucket count, max bucket count, tick, pending
  reset flag, lifetime detections, values seen.

With the default ``max_buckets=5`` that is ``2 * 64 * 6 * 8 + 64 * 8 + 4 * 8 + 8 * 8``
= 6,752 bytes per stream (see ``ADWIN.nbytes``); 64 rows cover windows far beyond 2**60
values.

>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> x = np.concatenate([rng.normal(0.0, 0.1, 1000), rng.normal(1.0, 0.1, 1000)])
>>> det = ADWIN()
>>> hits = det.update_many(x)
>>> bool(len(hits) > 0 and 1000 <= hits[0] < 1100)
True
>>> det.nbytes
6752
"""

from __future__ import annotations

import io
import math

import numba
import numpy as np

MAX_ROWS = 64

# fstate slots
F_TOTAL, F_VARIANCE, F_WIDTH, F_TOTAL_WIDTH = 0, 1, 2, 3
N_FSTATE = 4
# istate slots
I_ROWS, I_N_BUCKETS, I_MAX_N_BUCKETS, I_TICK, I_PENDING_RESET, I_DETECTIONS, I_SEEN = range(7)
N_ISTATE = 8


@numba.njit(cache=True, nogil=True)
def _row_size(row: int) -> float:
    """Number of values summarised by one bucket of ``row`` (2**row, exact as float64)."""
    return 2.0**row


@numba.njit(cache=True, nogil=True)
def _drop_front(totals, variances, counts, row, n_drop):
    """Remove the ``n_drop`` oldest buckets of ``row``, shifting the rest to the front."""
    cap = totals.shape[1]
    used = counts[row]
    if n_drop > used:
        n_drop = used
    keep = used - n_drop
    for j in range(keep):
        totals[row, j] = totals[row, j + n_drop]
        variances[row, j] = variances[row, j + n_drop]
    for j in range(keep, cap):
        totals[row, j] = 0.0
        variances[row, j] = 0.0
    counts[row] = keep


@numba.njit(cache=True, nogil=True)
def _clear(totals, variances, counts, fstate, istate):
    """Empty the window (the per-detection restart); lifetime counters are kept."""
    totals[:, :] = 0.0
    variances[:, :] = 0.0
    counts[:] = 0
    fstate[:] = 0.0
    istate[I_ROWS] = 1
    istate[I_N_BUCKETS] = 0
    istate[I_MAX_N_BUCKETS] = 0
    istate[I_TICK] = 0
    istate[I_PENDING_RESET] = 0


@numba.njit(cache=True, nogil=True)
def _insert(value, totals, variances, counts, fstate, istate, max_buckets):
    """Append ``value`` to row 0, update total / width / variance, then cascade merges."""
    counts_0 = counts[0]
    totals[0, counts_0] = value
    variances[0, counts_0] = 0.0
    counts[0] = counts_0 + 1
    istate[I_N_BUCKETS] += 1
    if istate[I_N_BUCKETS] > istate[I_MAX_N_BUCKETS]:
        istate[I_MAX_N_BUCKETS] = istate[I_N_BUCKETS]

    width = fstate[F_WIDTH] + 1.0
    total = fstate[F_TOTAL]
    inc = 0.0
    if width > 1.0:
        dv = value - total / (width - 1.0)
        inc = (width - 1.0) * dv * dv / width
    fstate[F_WIDTH] = width
    fstate[F_VARIANCE] = fstate[F_VARIANCE] + inc
    fstate[F_TOTAL] = total + value

    row = 0
    while counts[row] == max_buckets + 1:
        size = _row_size(row)
        t0 = totals[row, 0]
        t1 = totals[row, 1]
        m0 = t0 / size
        m1 = t1 / size
        merged_total = t0 + t1
        extra = size * 0.5 * (m0 - m1) * (m0 - m1)
        merged_var = variances[row, 0] + variances[row, 1] + extra
        nxt = row + 1
        if nxt >= istate[I_ROWS]:
            if nxt >= totals.shape[0]:
                raise ValueError("ADWIN window exceeds the fixed number of rows")
            istate[I_ROWS] = nxt + 1
        slot = counts[nxt]
        totals[nxt, slot] = merged_total
        variances[nxt, slot] = merged_var
        counts[nxt] = slot + 1
        istate[I_N_BUCKETS] += 1
        _drop_front(totals, variances, counts, row, 2)
        if counts[nxt] <= max_buckets:
            break
        row = nxt


@numba.njit(cache=True, nogil=True)
def _drop_oldest(totals, variances, counts, fstate, istate):
    """Remove the oldest bucket (first bucket of the last row) from the window."""
    last = istate[I_ROWS] - 1
    n = _row_size(last)
    u = totals[last, 0]
    v = variances[last, 0]
    mu = u / n
    width = fstate[F_WIDTH] - n
    total = fstate[F_TOTAL] - u
    mu_w = total / width
    dec = v + n * width * (mu - mu_w) * (mu - mu_w) / (n + width)
    fstate[F_WIDTH] = width
    fstate[F_TOTAL] = total
    fstate[F_VARIANCE] = fstate[F_VARIANCE] - dec
    _drop_front(totals, variances, counts, last, 1)
    istate[I_N_BUCKETS] -= 1
    if counts[last] == 0 and last > 0:
        istate[I_ROWS] = last


@numba.njit(cache=True, nogil=True)
def _cut_is_significant(n0, n1, delta_mean, delta, width, variance, min_window_length):
    """Hoeffding-style bound of ADWIN2 with the window variance (river's ``evaluate_cut``)."""
    d_prime = math.log(2.0 * math.log(width) / delta)
    m_inv = 1.0 / (n0 - min_window_length + 1.0) + 1.0 / (n1 - min_window_length + 1.0)
    eps = math.sqrt(2.0 * m_inv * (variance / width) * d_prime) + 2.0 / 3.0 * d_prime * m_inv
    return abs(delta_mean) > eps


@numba.njit(cache=True, nogil=True)
def _check(totals, variances, counts, fstate, istate, delta, clock, min_window_length,
           grace_period):
    """Advance the clock and, when due, shrink the window while a significant cut exists."""
    detected = False
    istate[I_TICK] += 1
    if istate[I_TICK] % clock == 0 and fstate[F_WIDTH] > grace_period:
        again = True
        while again:
            again = False
            # invariant over the cuts of one pass (the window only shrinks between passes):
            # the two logs of the bound are taken once per pass, not once per cut; the
            # bound itself keeps river's operation order, so decisions match exactly
            width = fstate[F_WIDTH]
            d_prime = math.log(2.0 * math.log(width) / delta)
            var_w = fstate[F_VARIANCE] / width
            two_thirds_d = 2.0 / 3.0 * d_prime
            n0 = 0.0
            n1 = fstate[F_WIDTH]
            u0 = 0.0
            u1 = fstate[F_TOTAL]
            done = False
            for row in range(istate[I_ROWS] - 1, -1, -1):
                if done:
                    break
                size = _row_size(row)
                used = counts[row]
                for k in range(used):
                    n0 += size
                    n1 -= size
                    t = totals[row, k]
                    u0 += t
                    u1 -= t
                    if row == 0 and k == used - 1:
                        done = True
                        break
                    delta_mean = (u0 / n0) - (u1 / n1)
                    if n1 < min_window_length or n0 < min_window_length:
                        continue
                    m_inv = (1.0 / (n0 - min_window_length + 1.0)
                             + 1.0 / (n1 - min_window_length + 1.0))
                    eps = math.sqrt(2.0 * m_inv * var_w * d_prime) + two_thirds_d * m_inv
                    if abs(delta_mean) > eps:  # _cut_is_significant, hoisted
                        again = True
                        detected = True
                        if fstate[F_WIDTH] > 0.0:
                            _drop_oldest(totals, variances, counts, fstate, istate)
                            done = True
                            break
    fstate[F_TOTAL_WIDTH] += fstate[F_WIDTH]
    return detected


@numba.njit(cache=True, nogil=True)
def adwin_update(
    values, totals, variances, counts, fstate, istate, delta, clock, max_buckets,
    min_window_length, grace_period,
):
    """Feed ``values`` one by one and return their indices (within ``values``) that drifted.

    State arrays are updated in place. ``min_window_length`` and ``grace_period`` are
    compared as float64, like river. After a detection the window is emptied before the
    next value is inserted (the restart may fall in the next call: ``istate`` carries it).
    """
    n = values.shape[0]
    out = np.empty(n, dtype=np.int64)
    m = 0
    for i in range(n):
        if istate[I_PENDING_RESET] != 0:
            _clear(totals, variances, counts, fstate, istate)
        _insert(values[i], totals, variances, counts, fstate, istate, max_buckets)
        if _check(totals, variances, counts, fstate, istate, delta, clock, min_window_length,
                  grace_period):
            out[m] = i
            m += 1
            istate[I_PENDING_RESET] = 1
            istate[I_DETECTIONS] += 1
        istate[I_SEEN] += 1
    return out[:m].copy()


class ADWIN:
    """Numba-backed equivalent of ``river.drift.ADWIN`` for one stream.

    ``max_buckets`` must be at least 2 (river accepts 1 but can crash on it).

    ``variance`` follows river: it is the window's sum of squared deviations from its mean
    (divide by ``width`` for the population variance).
    """

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError("delta must be in (0, 1)")
        if clock < 1 or min_window_length < 0 or grace_period < 0:
            raise ValueError("clock must be >= 1, min_window_length and grace_period >= 0")
        if max_buckets < 2:
            # with one bucket per row, rows can be left empty and river's own detector
            # panics when it later drops a bucket from an empty row
            raise ValueError("max_buckets must be >= 2")
        self.delta = float(delta)
        self.clock = int(clock)
        self.max_buckets = int(max_buckets)
        self.min_window_length = int(min_window_length)
        self.grace_period = int(grace_period)
        self.totals = np.zeros((MAX_ROWS, self.max_buckets + 1), dtype=np.float64)
        self.variances = np.zeros_like(self.totals)
        self.counts = np.zeros(MAX_ROWS, dtype=np.int64)
        self.fstate = np.zeros(N_FSTATE, dtype=np.float64)
        self.istate = np.zeros(N_ISTATE, dtype=np.int64)
        self.istate[I_ROWS] = 1

    def update_many(self, values: np.ndarray) -> np.ndarray:
        """Feed a 1-D block; return global indices (over all values seen) of detections."""
        x = np.ascontiguousarray(values, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError("values must be 1-D")
        offset = int(self.istate[I_SEEN])
        hits = adwin_update(
            x, self.totals, self.variances, self.counts, self.fstate, self.istate,
            self.delta, self.clock, self.max_buckets, float(self.min_window_length),
            float(self.grace_period),
        )
        return hits + offset

    def update(self, x: float) -> bool:
        """Feed one value; True if it triggered a detection."""
        return len(self.update_many(np.array([x], dtype=np.float64))) > 0

    @property
    def drift_detected(self) -> bool:
        """Whether the last value fed triggered a detection."""
        return bool(self.istate[I_PENDING_RESET])

    @property
    def width(self) -> int:
        """Number of values in the current window."""
        return int(self.fstate[F_WIDTH])

    @property
    def total(self) -> float:
        """Sum of the values in the current window."""
        return float(self.fstate[F_TOTAL])

    @property
    def estimation(self) -> float:
        """Mean of the current window (0.0 when empty)."""
        w = self.fstate[F_WIDTH]
        return 0.0 if w == 0 else float(self.fstate[F_TOTAL] / w)

    @property
    def variance(self) -> float:
        """Sum of squared deviations in the window (river's ``ADWIN.variance``)."""
        return float(self.fstate[F_VARIANCE])

    @property
    def n_detections(self) -> int:
        """Detections over this instance's lifetime (river's counter restarts per detection)."""
        return int(self.istate[I_DETECTIONS])

    @property
    def n_seen(self) -> int:
        """Values fed so far."""
        return int(self.istate[I_SEEN])

    @property
    def nbytes(self) -> int:
        """Bytes held by the state arrays."""
        arrays = (self.totals, self.variances, self.counts, self.fstate, self.istate)
        return sum(a.nbytes for a in arrays)

    def state_bytes(self) -> bytes:
        """Checkpoint parameters and state as an ``.npz`` blob."""
        buf = io.BytesIO()
        params = np.array(
            [self.delta, self.clock, self.max_buckets, self.min_window_length,
             self.grace_period],
            dtype=np.float64,
        )
        np.savez(
            buf, params=params, totals=self.totals, variances=self.variances,
            counts=self.counts, fstate=self.fstate, istate=self.istate,
        )
        return buf.getvalue()

    @classmethod
    def from_state_bytes(cls, blob: bytes) -> ADWIN:
        """Rebuild a detector from :meth:`state_bytes` output."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            delta, clock, max_buckets, mwl, grace = z["params"].tolist()
            det = cls(delta, int(clock), int(max_buckets), int(mwl), int(grace))
            for name in ("totals", "variances", "counts", "fstate", "istate"):
                arr = getattr(det, name)
                src = z[name]
                if src.shape != arr.shape or src.dtype != arr.dtype:
                    raise ValueError(f"checkpoint field {name!r} has the wrong shape or dtype")
                arr[...] = src
        return det
