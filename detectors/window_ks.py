"""Sliding-window distance to a baseline, per column: the kernel behind drift and confidence.

Each column is binned on the baseline's quantiles. :class:`WindowKS` keeps, per column
and edge, the running count of events at or above the edge (and per-column sums) since
the stream began; the window's histogram is that minus a snapshot taken ``window`` events
earlier (:func:`window_ks_block`). Every ``step`` events (once the window is full) it
computes, per column, the Kolmogorov-Smirnov distance and the PSI between the window's bin
shares and the baseline's, and reports the check if any column's KS exceeds the threshold.
:func:`window_ks_update` is the original per-event ring-buffer kernel, kept as the
reference the block kernel is tested against.

>>> import numpy as np
>>> edges = np.array([[-0.67, 0.0, 0.67]])            # quartiles of N(0, 1)
>>> cdf = np.array([[0.25, 0.5, 0.75, 1.0]])
>>> w = WindowKS(edges, cdf, window=200, step=50, threshold=0.2)
>>> rng = np.random.default_rng(0)
>>> len(w.update(rng.normal(0, 1, (1000, 1)), np.arange(1000)))
0
>>> hits = w.update(rng.normal(2, 1, (400, 1)), np.arange(1000, 1400))
>>> bool(hits.rows[0] < 150), bool(hits.ks[0, 0] > 0.2)
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

META_POS, META_FILL, META_SINCE, META_TOTAL = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True)
def _bin_of(edges_row: np.ndarray, n_edges: int, v: float) -> int:
    """Index of the first edge strictly above ``v`` (numpy searchsorted side='right').

    A branch-free count over the (at most a few dozen) edges: on random data it beats a
    binary search, whose branches the CPU cannot predict.
    """
    b = 0
    for k in range(n_edges):
        b += edges_row[k] <= v
    return b


@numba.njit(cache=True, nogil=True)
def window_ks_update(
    X, ts, edges, n_edges, base_cdf, ring_bins, ring_vals, ring_ts, counts, sums, meta,
    step, threshold,
):
    """Advance the window over ``X`` (n x d) and return the checks that crossed ``threshold``.

    State (``ring_*``, ``counts``, ``sums``, ``meta``) is updated in place. Returns
    ``(rows, window_start_ts, ks, psi, means)`` for the firing checks only.
    """
    n, d = X.shape
    W = ring_bins.shape[0]
    max_checks = n // max(step, 1) + 2
    rows = np.empty(max_checks, dtype=np.int64)
    starts = np.empty(max_checks, dtype=np.int64)
    ks_out = np.empty((max_checks, d), dtype=np.float32)
    psi_out = np.empty((max_checks, d), dtype=np.float32)
    mean_out = np.empty((max_checks, d), dtype=np.float32)
    m = 0
    pos, fill, since = meta[META_POS], meta[META_FILL], meta[META_SINCE]
    ks = np.empty(d, dtype=np.float64)
    psi = np.empty(d, dtype=np.float64)
    for i in range(n):
        full = fill == W
        for j in range(d):
            v = X[i, j]
            b = _bin_of(edges[j], n_edges[j], v)
            if full:
                counts[j, ring_bins[pos, j]] -= 1
                sums[j] -= ring_vals[pos, j]
            counts[j, b] += 1
            sums[j] += v
            ring_bins[pos, j] = b
            ring_vals[pos, j] = v
        ring_ts[pos] = ts[i]
        pos += 1
        if pos == W:
            pos = 0
        if not full:
            fill += 1
        since += 1
        if fill == W and since >= step:
            since = 0
            worst = 0.0
            for j in range(d):
                nb = n_edges[j] + 1
                cum = 0.0
                prev_base = 0.0
                best = 0.0
                p_sum = 0.0
                for b in range(nb):
                    cum += counts[j, b]
                    diff = abs(cum / W - base_cdf[j, b])
                    if diff > best:
                        best = diff
                ks[j] = best
                if best > worst:
                    worst = best
            if worst > threshold:
                # PSI only for the checks that are reported (logs are not free)
                for j in range(d):
                    nb = n_edges[j] + 1
                    prev_base = 0.0
                    p_sum = 0.0
                    for b in range(nb):
                        q = base_cdf[j, b] - prev_base
                        prev_base = base_cdf[j, b]
                        pw = (counts[j, b] + 0.5) / (W + 0.5 * nb)
                        pb = max(q, 0.5 / W)
                        p_sum += (pw - pb) * np.log(pw / pb)
                    psi[j] = p_sum
                rows[m] = i
                starts[m] = ring_ts[pos]  # oldest event still in the window
                for j in range(d):
                    ks_out[m, j] = ks[j]
                    psi_out[m, j] = psi[j]
                    mean_out[m, j] = sums[j] / W
                m += 1
    meta[META_POS], meta[META_FILL], meta[META_SINCE] = pos, fill, since
    return rows[:m], starts[:m], ks_out[:m], psi_out[:m], mean_out[:m]


def f32_thresholds(edges: np.ndarray, n_edges: np.ndarray) -> np.ndarray:
    """``(E, d)`` float32 edges such that ``t <= v`` equals ``edge <= v`` for float32 ``v``.

    Each float64 edge becomes the smallest float32 not below it, so comparing the float32
    input with it is exact and the comparison vectorises over float32 lanes. Padding past a
    column's ``n_edges`` is NaN: it never compares true, not even against ``+inf``.
    """
    d, n_e = edges.shape
    t = edges.astype(np.float32)
    low = t.astype(np.float64) < edges
    t[low] = np.nextafter(t[low], np.float32(np.inf))
    t[np.arange(n_e)[None, :] >= np.asarray(n_edges)[:, None]] = np.nan
    return np.ascontiguousarray(t.T)


@numba.njit(cache=True, nogil=True)
def _segment(X, i0, L, edges_t, n_edges, xt, cum_ge, cum_sums, ring_vals, ring_ts, ts, pos):
    """Count ``L`` events from row ``i0`` into the running totals; copy them into the ring.

    The rows are transposed into ``xt`` first, so each (column, edge) pair is one
    branch-free reduction over contiguous float32 values (SIMD, no scatter, no stores).
    Returns the new ring position.
    """
    d = X.shape[1]
    W = ring_vals.shape[0]
    for r in range(L):
        x = X[i0 + r]
        for j in range(d):
            v = x[j]
            xt[j, r] = v
            cum_sums[j] += v
    # pad to a multiple of 32 with NaN (never >= an edge): the counting loops then run
    # whole unrolled SIMD iterations with no scalar tail
    Lp = (L + 31) & ~31
    for j in range(d):
        row = xt[j, :Lp]
        for r in range(L, Lp):
            row[r] = np.nan
        for k in range(n_edges[j]):
            e = edges_t[k, j]
            c = np.int32(0)
            for r in range(Lp):
                c = np.int32(c + np.int32(row[r] >= e))
            cum_ge[j, k] += c
    for r in range(L):
        ring_ts[pos] = ts[i0 + r]
        for j in range(d):
            ring_vals[pos, j] = X[i0 + r, j]
        pos += 1
        if pos == W:
            pos = 0
    return pos


@numba.njit(cache=True, nogil=True)
def window_ks_block(
    X, ts, edges_t, n_edges, base_cdf, ring_vals, ring_ts, cum_ge, cum_sums, snap_ge,
    snap_sums, snap_t, xt, meta, step, threshold,
):
    """Advance the window over ``X`` (n x d); return the checks that crossed ``threshold``.

    Same checks and statistics as :func:`window_ks_update`, less work per event. Nothing
    is binned per event: for every column and edge the kernel keeps the running count of
    events at or above the edge since the stream began (``cum_ge``; the count of a bin
    and of all bins below it follow from those). Events are taken in segments that end
    where something happens (a check, or a snapshot), each counted by a SIMD reduction
    over the segment's transposed values. A check at event count ``t`` needs the window's
    counts: the totals at ``t`` minus those at ``t - window``, which the kernel copied
    into the ring ``snap_*`` when the stream passed that count (every ``step`` events),
    so nothing is subtracted when an event leaves the window. ``ring_vals``/``ring_ts``
    keep the last ``window`` events for window start times and
    :meth:`WindowKS.window_shares`; ``xt`` is scratch of at least ``(d, step)``.

    ``meta`` is ``[pos, fill, since, total]``; checks happen exactly where
    :func:`window_ks_update` has them (window full and ``step`` events since the last).
    """
    n, d = X.shape
    W = ring_vals.shape[0]
    R = snap_t.shape[0]
    step = max(step, 1)
    s0 = max(W, step) - W  # event count of the first snapshot any check reads
    max_checks = n // step + 2
    rows = np.empty(max_checks, dtype=np.int64)
    starts = np.empty(max_checks, dtype=np.int64)
    ks_out = np.empty((max_checks, d), dtype=np.float32)
    psi_out = np.empty((max_checks, d), dtype=np.float32)
    mean_out = np.empty((max_checks, d), dtype=np.float32)
    ks = np.empty(d, dtype=np.float64)
    m = 0
    pos, fill, since, total = meta[0], meta[1], meta[2], meta[3]
    i = 0
    while i < n:
        if total < s0:
            to_snap = s0 - total
        else:
            to_snap = (s0 - total) % step
            if to_snap == 0:  # a future check's window starts here: keep the totals
                slot = ((total - s0) // step) % R
                snap_t[slot] = total
                for j in range(d):
                    snap_sums[slot, j] = cum_sums[j]
                    for k in range(n_edges[j]):
                        snap_ge[slot, j, k] = cum_ge[j, k]
                to_snap = step
        to_check = max(W - fill, step - since, 1)
        L = min(n - i, to_snap, to_check, xt.shape[1])
        pos = _segment(X, i, L, edges_t, n_edges, xt, cum_ge, cum_sums, ring_vals, ring_ts,
                       ts, pos)
        fill = min(fill + L, W)
        since += L
        total += L
        i += L
        if fill == W and since >= step:
            since = 0
            slot = ((total - W - s0) // step) % R
            worst = 0.0
            for j in range(d):
                best = 0.0
                ne = n_edges[j]
                for b in range(ne + 1):
                    cum = W - (cum_ge[j, b] - snap_ge[slot, j, b]) if b < ne else W
                    diff = abs(cum / W - base_cdf[j, b])
                    if diff > best:
                        best = diff
                ks[j] = best
                if best > worst:
                    worst = best
            if worst > threshold:
                # PSI only for the checks that are reported (logs are not free)
                for j in range(d):
                    ne = n_edges[j]
                    nb = ne + 1
                    prev_base = 0.0
                    prev_cum = 0
                    p_sum = 0.0
                    for b in range(nb):
                        q = base_cdf[j, b] - prev_base
                        prev_base = base_cdf[j, b]
                        cum = W - (cum_ge[j, b] - snap_ge[slot, j, b]) if b < ne else W
                        pw = (cum - prev_cum + 0.5) / (W + 0.5 * nb)
                        prev_cum = cum
                        pb = max(q, 0.5 / W)
                        p_sum += (pw - pb) * np.log(pw / pb)
                    psi_out[m, j] = p_sum
                    ks_out[m, j] = ks[j]
                    mean_out[m, j] = (cum_sums[j] - snap_sums[slot, j]) / W
                rows[m] = i - 1
                starts[m] = ring_ts[pos]  # oldest event still in the window
                m += 1
    meta[0], meta[1], meta[2], meta[3] = pos, fill, since, total
    return rows[:m], starts[:m], ks_out[:m], psi_out[:m], mean_out[:m]


@dataclass(slots=True)
class WindowHits:
    """Checks that crossed the threshold: row within the block and per-column statistics."""

    rows: np.ndarray
    window_start_ts: np.ndarray
    ks: np.ndarray
    psi: np.ndarray
    means: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.shape[0])


class WindowKS:
    """Stateful wrapper: one sliding window over ``d`` columns against a binned baseline.

    ``edges`` is ``(d, E)`` with each row's unused tail padded by ``+inf``; ``base_cdf`` is
    ``(d, E + 1)``: the baseline's cumulative share at the end of each bin.
    """

    def __init__(
        self, edges: np.ndarray, base_cdf: np.ndarray, window: int, step: int, threshold: float
    ) -> None:
        edges = np.asarray(edges, dtype=np.float64)
        d, n_e = edges.shape
        self.edges = edges
        self.n_edges = np.isfinite(edges).sum(axis=1).astype(np.int64)
        self.edges_t = f32_thresholds(edges, self.n_edges)
        self.base_cdf = np.asarray(base_cdf, dtype=np.float64)
        self.window, self.step, self.threshold = int(window), int(step), float(threshold)
        self.ring_vals = np.zeros((window, d), dtype=np.float32)
        self.ring_ts = np.zeros(window, dtype=np.int64)
        #: per column and edge: events at or above the edge so far (window = difference)
        self.cum_ge = np.zeros((d, max(n_e, 1)), dtype=np.int64)
        self.cum_sums = np.zeros(d, dtype=np.float64)
        n_snap = self.window // max(self.step, 1) + 2
        self.snap_ge = np.zeros((n_snap, d, max(n_e, 1)), dtype=np.int64)
        self.snap_sums = np.zeros((n_snap, d), dtype=np.float64)
        self.snap_t = np.full(n_snap, -1, dtype=np.int64)
        self.xt = np.zeros((d, (max(self.step, 1) + 31) // 32 * 32), dtype=np.float32)
        self.meta = np.zeros(4, dtype=np.int64)  # pos, fill, since, total

    @property
    def full(self) -> bool:
        return bool(self.meta[META_FILL] == self.window)

    def update(self, X: np.ndarray, ts: np.ndarray) -> WindowHits:
        """Feed ``n`` events (rows of ``X``, event times ``ts``); return the firing checks."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        ts = np.ascontiguousarray(ts, dtype=np.int64)
        out = window_ks_block(
            X, ts, self.edges_t, self.n_edges, self.base_cdf, self.ring_vals, self.ring_ts,
            self.cum_ge, self.cum_sums, self.snap_ge, self.snap_sums, self.snap_t, self.xt,
            self.meta, self.step, self.threshold,
        )
        return WindowHits(*out)

    def _window_bins(self, column: int) -> np.ndarray:
        """Bin of every event now in the window, for one column (the kernel's binning)."""
        fill = int(self.meta[META_FILL])
        e = self.edges[column, : int(self.n_edges[column])]
        return np.searchsorted(e, self.ring_vals[:fill, column].astype(np.float64),
                               side="right")

    @property
    def counts(self) -> np.ndarray:
        """``(d, E + 1)`` bin counts of the events now in the window (from the ring)."""
        d, nb = self.base_cdf.shape
        return np.stack([np.bincount(self._window_bins(j), minlength=nb)[:nb]
                         for j in range(d)])

    def window_shares(self, column: int) -> np.ndarray:
        """Share of the current window in each baseline bin of ``column`` (for evidence)."""
        nb = int(self.n_edges[column]) + 1
        counts = np.bincount(self._window_bins(column), minlength=nb)[:nb]
        return counts / max(int(self.meta[META_FILL]), 1)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The mutable state, for checkpoints and forensic snapshots."""
        return {
            "ring_vals": self.ring_vals, "ring_ts": self.ring_ts, "cum_ge": self.cum_ge,
            "cum_sums": self.cum_sums, "snap_ge": self.snap_ge, "snap_sums": self.snap_sums,
            "snap_t": self.snap_t, "meta": self.meta,
        }
