"""Multivariate mean shift in the baseline's whitened space, over several sliding windows.

Why: the per-feature KS window and CUSUM test each feature on its own, so a shift spread
over correlated features (a new segment, a case-mix change, a sensor fault moving
neighbouring pixels) has to show in one feature before anything fires. Here every event
is mapped to baseline normal scores (each feature through the baseline's own quantile
bins, as in :mod:`detectors.cusum`, so the scores are bounded and distribution-free),
standardised, and whitened with the correlation of those scores in the profile's
reference ``sample`` rows. Under the baseline the whitened vectors ``y`` have mean 0 and
identity covariance, so for the last ``w`` events

    T_w = || sum y ||^2 / w

is approximately chi-square with ``d`` degrees of freedom, and a mean shift ``delta`` (in
whitened units) adds about ``w |delta|^2``. Testing windows of ``w = step, 2 step, 4 step,
...`` up to ``window`` after every event approximates the generalised likelihood ratio
over the unknown change point within a factor two of the best window length: a large
shift is caught by a short window within a few dozen events, a small one by a long window.

Calibration (per window length, from the baseline and the budget; no tuned constants):

- false-alarm probability per event and window length
  ``alpha = 1 / (budget_events * n_windows)`` (Bonferroni over the window lengths; every
  event is a test);
- the law of ``T_w`` is approximated by a Pearson type III (shifted gamma) law with its
  first three moments: the mean ``E|y|^2`` and the variance
  ``2 (w - 1) / w * tr(C^2) + Var(|y|^2) / w`` exactly from the reference sample (``C`` the
  sample covariance after whitening, which is the identity up to the eigenvalue floor),
  and the skewness from a seeded simulation of windows of the shortest length drawn from
  the sample. Skewed features (rare binary values, Poisson counts) make short windows'
  ``T`` heavier-tailed than chi-square; the non-Gaussian part of the skewness decays like
  ``1 / sqrt(w)`` (Edgeworth), which is how it is carried to the longer windows. The
  skewness never goes below the chi-square law's ``sqrt(8 / d)``;
- two finite-sample factors: the whitening is estimated from ``n_s`` sample rows, which
  inflates ``T`` by Hotelling's ``(n_s - 1) / (n_s - d - 2)``, and the baseline's bin shares
  (hence the score means) come from ``n_ref`` reference events, which adds ``w / n_ref``
  of the variance: the threshold is multiplied by both.

Checked on 10^6-event benign streams of the scikit-learn datasets used by the quality
report and on skewed binary and Poisson features (``tests/detectors/test_whitened.py``
runs a smaller version).

Memory per model: a ring of the last ``window`` whitened events
(``window x d x 8`` bytes: 64 kB for 8 features, 512 kB for 64) plus ``d^2 x 16`` bytes of
whitening matrices.

>>> import numpy as np
>>> from detectors.baseline import Profile
>>> from benchmarks.synthetic import make_block
>>> ref = make_block(n=4000, d=6, seed=1)
>>> det = WhitenedShift(Profile.build(ref).features, Profile.build(ref).sample_rows(), 4000,
...                     DetectorConfig(window=400, step=50))
>>> len(det.update(make_block(n=5000, d=6, seed=2).X, np.arange(5000)))
0
>>> hits = det.update(make_block(n=500, d=6, seed=3, shift={1: 0.5, 4: 0.5}).X,
...                   np.arange(5000, 5500))
>>> bool(hits.rows[0] < 150)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from detectors.baseline import ColumnProfile
from detectors.binning import BinEdges
from detectors.calibration import normal_upper
from detectors.config import DetectorConfig
from detectors.cusum import normal_scores

#: Chance per alarm of naming, in the evidence, a column that did not move.
NAMING_ALPHA = 0.01
#: Simulated windows of the shortest length used to measure the skewness of ``T``.
#: 4000 windows estimate a skewness to about +-0.05 (``sqrt(6 / 4000)``), small against the
#: chi-square law's own ``sqrt(8 / d)`` for any d up to a few hundred.
SKEW_WINDOWS = 4000


# --------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def score_matrix(B, scores, keep):
    """Standardised baseline normal score of every kept column, ``(n, len(keep))``, in
    the precision of ``scores``.

    ``B`` holds every value's baseline bin (:mod:`detectors.binning`).
    """
    n = B.shape[0]
    d = keep.shape[0]
    Z = np.empty((n, d), dtype=scores.dtype)
    for i in range(n):
        for a in range(d):
            Z[i, a] = scores[a, B[i, keep[a]]]
    return Z


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _sq_norm(sums, k, d):
    """``|sums[k, :d]|^2``, summed in the order that vectorises (the compiler's)."""
    t = 0.0
    for a in range(d):
        t += sums[k, a] * sums[k, a]
    return t


@numba.njit(cache=True, nogil=True)
def whitened_update(Y, ts, scales, thresholds, ring, ring_ts, sums, meta, quiet_events):
    """Slide every window over the whitened events ``Y`` (n x d); return the alarms.

    ``meta`` = (ring position, events in the ring, quiet countdown). An alarm is the
    window length whose ``T_w / threshold_w`` is largest at an event where at least one
    crosses; after an alarm the detector stays silent for ``quiet_events`` events (a
    lasting shift gives one report per quiet period; the incident tracker folds them).
    Returns ``(rows, scale_index, T, window_start_ts, window_sums)``.
    """
    n, d = Y.shape
    R = ring.shape[0]
    S = scales.shape[0]
    rows = np.empty(n, dtype=np.int64)
    which = np.empty(n, dtype=np.int64)
    stat = np.empty(n, dtype=np.float64)
    start = np.empty(n, dtype=np.int64)
    wsum = np.empty((n, d), dtype=np.float64)
    m = 0
    pos, fill, quiet = meta[0], meta[1], meta[2]
    for i in range(n):
        for k in range(S):
            w = scales[k]
            if fill >= w:
                old = pos - w
                if old < 0:
                    old += R
                for a in range(d):
                    sums[k, a] -= ring[old, a]
            for a in range(d):
                sums[k, a] += Y[i, a]
        for a in range(d):
            ring[pos, a] = Y[i, a]
        ring_ts[pos] = ts[i]
        pos += 1
        if pos == R:
            pos = 0
        if fill < R:
            fill += 1
        if quiet > 0:
            quiet -= 1
            continue
        best = -1
        best_ratio = 1.0
        best_t = 0.0
        for k in range(S):
            w = scales[k]
            if fill < w:
                continue
            t = _sq_norm(sums, k, d) / w
            r = t / thresholds[k]
            if r > best_ratio:
                best_ratio = r
                best = k
                best_t = t
        if best >= 0:
            w = scales[best]
            first = pos - w
            if first < 0:
                first += R
            rows[m] = i
            which[m] = best
            stat[m] = best_t
            start[m] = ring_ts[first]
            for a in range(d):
                wsum[m, a] = sums[best, a]
            m += 1
            quiet = quiet_events
    meta[0], meta[1], meta[2] = pos, fill, quiet
    return rows[:m], which[:m], stat[:m], start[:m], wsum[:m]


# --------------------------------------------------------------------------------------
# Calibration helpers (pure Python, run once per profile)
# --------------------------------------------------------------------------------------
def _gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma ``Q(a, x)`` (series / continued fraction)."""
    if x <= 0.0:
        return 1.0
    ln_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(ln_front))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    dd = 1.0 / b
    h = dd
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        dd = an * dd + b
        dd = tiny if abs(dd) < tiny else dd
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        dd = 1.0 / dd
        delta = dd * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(ln_front) * h


def gamma_upper(shape: float, alpha: float) -> float:
    """x with ``P(G > x) = alpha`` for a unit-scale Gamma(shape) variable (bisection)."""
    lo, hi = 0.0, max(1.0, shape)
    while _gamma_q(shape, hi) > alpha:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _gamma_q(shape, mid) > alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10 * hi:
            break
    return hi


def pearson3_upper(mean: float, var: float, skew: float, alpha: float) -> float:
    """Upper ``alpha`` quantile of the Pearson III law with these three moments."""
    k = 4.0 / (skew * skew)
    theta = math.sqrt(var / k)
    return mean - k * theta + theta * gamma_upper(k, alpha)


def window_scales(window: int, step: int) -> list[int]:
    """``step, 2 step, 4 step, ...`` up to ``window`` (at least one length)."""
    step = max(int(step), 1)
    out = []
    w = step
    while w <= window:
        out.append(w)
        w *= 2
    return out or [int(window)]


@dataclass(slots=True)
class ShiftHits:
    rows: np.ndarray
    scale: np.ndarray  # window length of each alarm (events)
    value: np.ndarray  # T_w at the alarm
    threshold: np.ndarray
    window_start_ts: np.ndarray
    mean_scores: np.ndarray  # (alarms, kept columns): window mean of the standardised scores

    def __len__(self) -> int:
        return int(self.rows.shape[0])


class WhitenedShift:
    """Streaming multi-window whitened mean-shift test of one model's features."""

    def __init__(self, columns: ColumnProfile, sample: np.ndarray, n_ref: int,
                 cfg: DetectorConfig) -> None:
        self.columns = columns
        self.budget_events = cfg.budget_events
        self.cut = BinEdges(columns.edges_array())
        cdf = columns.cdf_array()
        raw = normal_scores(cdf, n_ref)
        share = np.diff(np.concatenate([np.zeros((cdf.shape[0], 1)), cdf], axis=1), axis=1)
        mu = (share * raw).sum(axis=1)
        var = (share * (raw - mu[:, None]) ** 2).sum(axis=1)
        # Columns with one occupied bin (constant in the baseline) carry no direction; the
        # KS window still sees them take a new value.
        self.keep = np.flatnonzero(var > 1e-12).astype(np.int64)
        d = int(self.keep.size)
        self.d = d
        self.scores = ((raw[self.keep] - mu[self.keep, None])
                       / np.sqrt(var[self.keep])[:, None]).astype(np.float64)
        self.scales = np.asarray(window_scales(cfg.window, cfg.step), dtype=np.int64)
        self.alpha = 1.0 / (cfg.budget_events * len(self.scales))
        self.quiet_events = int(cfg.window)
        self.n_ref = int(n_ref)
        R = int(self.scales.max())
        self.ring = np.zeros((R, max(d, 1)), dtype=np.float64)
        self.ring_ts = np.zeros(R, dtype=np.int64)
        self.sums = np.zeros((len(self.scales), max(d, 1)), dtype=np.float64)
        self.meta = np.zeros(3, dtype=np.int64)
        self.enabled = d > 0 and sample.shape[0] > d + 2
        self.W = np.eye(max(d, 1))
        self.W_inv = np.eye(max(d, 1))
        self.thresholds = np.full(len(self.scales), np.inf)
        self.detail: dict[str, Any] = {}
        if self.enabled:
            self._fit(np.ascontiguousarray(sample, dtype=np.float32))
        self._single_precision()

    def _single_precision(self) -> None:
        """float32 copies of the scores and the whitening, for :meth:`whiten`."""
        self.scores32 = self.scores.astype(np.float32)
        self.W32 = self.W.astype(np.float32)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle; a checkpoint from before the shared binning gets its edges object."""
        self.__dict__.update(state)
        if "cut" not in state:
            self.cut = BinEdges(self.__dict__.pop("edges"))
            self.__dict__.pop("n_edges", None)
        if "W32" not in state:
            self._single_precision()

    def _fit(self, sample: np.ndarray) -> None:
        """Whitening from the sample's scores, then thresholds per window length."""
        Zs = score_matrix(self.cut.bins(sample), self.scores, self.keep)
        n_s, d = Zs.shape
        C = np.atleast_2d(np.cov(Zs, rowvar=False))
        ev, V = np.linalg.eigh(C)
        # With n_s rows an eigenvalue is only known to about sqrt(2 / n_s) of the largest;
        # directions far below 2 / n_s of it are noise, floored there so that one badly
        # estimated direction cannot dominate T.
        floor = max(float(ev.max()), 1e-12) * 2.0 / n_s
        ev = np.maximum(ev, floor)
        self.W = np.ascontiguousarray(V / np.sqrt(ev))
        self.W_inv = np.ascontiguousarray((V * np.sqrt(ev)).T)
        Ys = (Zs - Zs.mean(axis=0)) @ self.W
        r2 = (Ys**2).sum(axis=1)
        Cy = np.atleast_2d(np.cov(Ys, rowvar=False, bias=True))
        mean_r2, var_r2, tr_c2 = float(r2.mean()), float(r2.var()), float((Cy * Cy).sum())
        hotelling = (n_s - 1) / max(n_s - d - 2, 1)
        # Skewness of T at the shortest window, by simulation from the sample (seeded).
        w0 = int(self.scales[0])
        rng = np.random.default_rng(0)
        T0 = np.empty(SKEW_WINDOWS)
        chunk = max(1, 2_000_000 // max(w0 * d, 1))
        for lo in range(0, SKEW_WINDOWS, chunk):
            k = min(chunk, SKEW_WINDOWS - lo)
            idx = rng.integers(0, n_s, (k, w0))
            s = Ys[idx].sum(axis=1)
            T0[lo: lo + k] = (s * s).sum(axis=1) / w0
        m0, v0 = T0.mean(), T0.var()
        skew0 = float(((T0 - m0) ** 3).mean() / max(v0, 1e-300) ** 1.5)
        thr, skews = [], []
        for w in self.scales.tolist():
            var_t = 2.0 * (w - 1) / w * tr_c2 + var_r2 / w
            nu = 2.0 * mean_r2**2 / var_t
            chi_skew = math.sqrt(8.0 / nu)
            excess0 = skew0 - math.sqrt(8.0 / (2.0 * m0 * m0 / max(v0, 1e-300)))
            skew = chi_skew + max(excess0, 0.0) * math.sqrt(w0 / w)
            q = pearson3_upper(mean_r2, var_t, skew, self.alpha)
            thr.append(hotelling * (1.0 + w / self.n_ref) * q)
            skews.append(round(skew, 3))
        self.thresholds = np.asarray(thr, dtype=np.float64)
        self.detail = {"hotelling_factor": round(hotelling, 4), "skewness": skews,
                       "sample_rows": int(n_s)}

    def whiten(self, bins: np.ndarray) -> np.ndarray:
        """Whitened score vectors ``(n, d)`` of events with these baseline bins (a pure
        function of the bins and the fitted whitening).

        float32: the product is one single-precision BLAS call, half the time of a
        double one, and the window sums still add the vectors in float64 (the ring keeps
        exactly what was added, so a sum loses nothing when an event leaves it). The
        scores are bounded normal scores, so single precision moves ``T`` by about
        ``1e-6`` of itself against thresholds set to a ``1e-6`` false-alarm chance: the
        quality report's detections are unchanged.
        """
        return score_matrix(bins, self.scores32, self.keep) @ self.W32

    def update(self, X: np.ndarray, ts: np.ndarray, bins: np.ndarray | None = None,
               Y: np.ndarray | None = None) -> ShiftHits:
        """Feed ``n`` events (rows of the full feature matrix ``X``); return the alarms.

        ``bins`` are ``X``'s baseline bins, ``Y`` their :meth:`whiten`, when the caller
        already has them.
        """
        d = max(self.d, 1)
        if not self.enabled or X.shape[0] == 0:
            e = np.empty(0, dtype=np.int64)
            return ShiftHits(e, e, np.empty(0), np.empty(0), e, np.empty((0, d)))
        if Y is None:
            Y = self.whiten(self.cut.bins(X) if bins is None else bins)
        rows, which, stat, start, wsum = whitened_update(
            Y, np.ascontiguousarray(ts, dtype=np.int64), self.scales, self.thresholds,
            self.ring, self.ring_ts, self.sums, self.meta, self.quiet_events)
        scale = self.scales[which]
        means = (wsum @ self.W_inv) / scale[:, None] if len(rows) else np.empty((0, d))
        return ShiftHits(rows, scale, stat, self.thresholds[which], start, means)

    def moved(self, hits: ShiftHits, h: int, top: int = 5) -> list[dict[str, Any]]:
        """The columns whose window mean score moved most at alarm ``h`` (baseline sd)."""
        shift = hits.mean_scores[h]
        order = np.argsort(-np.abs(shift), kind="stable")[:top]
        w = int(hits.scale[h])
        # Naming is evidence about an alarm already raised, so its error rate is per alarm,
        # not per event: a column is named as moved when its own window mean is beyond the
        # two-sided normal bound at NAMING_ALPHA over the columns (Bonferroni), i.e. at
        # most a NAMING_ALPHA chance per alarm of naming a column that did not move.
        bound = normal_upper(NAMING_ALPHA / (2 * max(self.d, 1))) / math.sqrt(w)
        out = []
        for a in order.tolist():
            j = int(self.keep[a])
            out.append({
                "name": self.columns.names[j],
                "index": j,
                "over_threshold": bool(abs(shift[a]) > bound) or a == int(order[0]),
                "test": "whitened_mean_shift",
                "direction": "up" if shift[a] >= 0 else "down",
                "shift_in_std": round(float(shift[a]), 3),
                "baseline_mean": round(self.columns.mean[j], 6),
            })
        return out

    def calibration(self) -> dict[str, Any]:
        return {
            "statistic": "whitened_mean_shift_of_baseline_normal_scores",
            "window_events": self.scales.tolist(),
            "thresholds": [round(float(t), 3) for t in self.thresholds],
            "alpha_per_event_and_window": self.alpha,
            "dimensions": self.d,
            **self.detail,
        }
