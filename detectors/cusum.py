"""Two-sided CUSUM on normal scores of baseline-binned columns: fast for sustained shifts.

The sliding-window KS test (:mod:`detectors.window_ks`) sees any change of shape but
needs a good part of a window to fill with shifted events. A CUSUM accumulates evidence
event by event and reacts to a sustained one-standard-deviation shift in a few dozen
events. To make it distribution-free, each value is mapped through the baseline's own
CDF (its quantile bin) to the standard-normal score of the bin's middle share; under the
baseline these scores are close to N(0, 1) whatever the feature looks like, and bounded.

Parameters: reference value ``k`` (half the smallest shift, in standard deviations, the
test is tuned for) and decision interval ``h``, chosen so the average run length between
false alarms is the budget (per column and per side, Bonferroni over both): Siegmund's
approximation ``ARL0 ~ (exp(2k(h + 1.166)) - 2k(h + 1.166) - 1) / (2 k^2)`` solved for h.

>>> import numpy as np
>>> from detectors.baseline import ColumnProfile
>>> rng = np.random.default_rng(0)
>>> cols = ColumnProfile.build(rng.normal(size=(5000, 2)), ["a", "b"], 16)
>>> c = BinnedCusum(cols, n_ref=5000, budget_events=1e6)
>>> len(c.update(rng.normal(size=(20000, 2)), np.arange(20000)))
0
>>> X = rng.normal(size=(300, 2)); X[:, 1] += 1.0
>>> hits = c.update(X, np.arange(300))
>>> int(hits.column[0]), bool(hits.rows[0] < 100)
(1, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numba
import numpy as np

from detectors.baseline import ColumnProfile
from detectors.binning import BinEdges

#: Half the smallest sustained shift (baseline standard deviations) tuned for: 0.5 sd.
K_REF = 0.25


def siegmund_h(arl0: float, k: float = K_REF) -> float:
    """Decision interval giving an in-control average run length of ``arl0`` events."""
    lo, hi = 0.0, 200.0
    for _ in range(100):
        mid = (lo + hi) / 2
        x = 2 * k * (mid + 1.166)
        arl = (math.exp(x) - x - 1) / (2 * k * k)
        lo, hi = (mid, hi) if arl < arl0 else (lo, mid)
    return hi


def normal_scores(cdf: np.ndarray, n_ref: int) -> np.ndarray:
    """Standard-normal score of the middle share of every bin, ``(d, bins)``."""
    inv = NormalDist().inv_cdf
    lo = np.concatenate([np.zeros((cdf.shape[0], 1)), cdf[:, :-1]], axis=1)
    mid = np.clip((lo + cdf) / 2, 0.5 / n_ref, 1 - 0.5 / n_ref)
    return np.vectorize(inv)(mid)


@numba.njit(cache=True, nogil=True)
def cusum_update(B, ts, scores, k, h, quiet_events, s_pos, s_neg, since_pos, since_neg,
                 quiet):
    """Advance both CUSUMs of every column over the binned block ``B``; return the alarms.

    ``B`` is every value's baseline bin (:mod:`detectors.binning`). Returns
    ``(row, column, side, value, change_ts, levels)``; ``change_ts`` is when the alarming
    sum last left zero (CUSUM's estimate of the change point), ``levels`` every column's
    larger sum after that row's update (which other columns are moving too). A column
    that alarms restarts from zero and is not reported again for ``quiet_events`` events,
    so a lasting shift gives one report per ``quiet_events`` per column (the tracker folds
    them). The column loop has no branch (it vectorises); alarms, rare, are handled in a
    second pass over the row.
    """
    n, d = B.shape
    # A column reports at most once per ``quiet_events`` rows (every row when that is 0),
    # and all of them may report on the same row: this bounds the alarms of the block.
    cap = d * (n // max(quiet_events, 1) + 1)
    rows = np.empty(cap, dtype=np.int64)
    cols = np.empty(cap, dtype=np.int64)
    side = np.empty(cap, dtype=np.int64)
    val = np.empty(cap, dtype=np.float64)
    onset = np.empty(cap, dtype=np.int64)
    level = np.empty((cap, d), dtype=np.float64)
    lv = np.empty(d, dtype=np.float64)
    zz = np.empty(d, dtype=np.float64)
    m = 0
    for i in range(n):
        t = ts[i]
        for j in range(d):  # the gather on its own: the update loop below then vectorises
            zz[j] = scores[j, B[i, j]]
        hit = 0
        for j in range(d):
            z = zz[j]
            p0 = s_pos[j]
            n0 = s_neg[j]
            sp = p0 + z - k
            sn = n0 - z - k
            since_pos[j] = t if (sp > 0.0) & (p0 == 0.0) else since_pos[j]
            since_neg[j] = t if (sn > 0.0) & (n0 == 0.0) else since_neg[j]
            sp = sp if sp > 0.0 else 0.0
            sn = sn if sn > 0.0 else 0.0
            s_pos[j] = sp
            s_neg[j] = sn
            q = quiet[j]
            quiet[j] = q - (q > 0)
            hit += (sp > h) + (sn > h)
        if not hit:
            continue
        for j in range(d):
            lv[j] = max(s_pos[j], s_neg[j])
        for j in range(d):
            if s_pos[j] > h or s_neg[j] > h:
                up = s_pos[j] > h
                if quiet[j] == 0:
                    rows[m] = i
                    cols[m] = j
                    side[m] = 1 if up else -1
                    val[m] = s_pos[j] if up else s_neg[j]
                    onset[m] = since_pos[j] if up else since_neg[j]
                    for jj in range(d):
                        level[m, jj] = lv[jj]
                    m += 1
                    quiet[j] = quiet_events
                s_pos[j] = 0.0
                s_neg[j] = 0.0
    return rows[:m], cols[:m], side[:m], val[:m], onset[:m], level[:m]


@dataclass(slots=True)
class CusumHits:
    rows: np.ndarray
    column: np.ndarray
    side: np.ndarray  # +1: the column went up, -1: down
    value: np.ndarray
    change_ts: np.ndarray
    levels: np.ndarray  # (alarms, columns): each column's CUSUM at the alarm

    def __len__(self) -> int:
        return int(self.rows.shape[0])


class BinnedCusum:
    """Per-column two-sided CUSUM against a binned baseline, threshold from the budget."""

    def __init__(self, columns: ColumnProfile, n_ref: int, budget_events: float,
                 quiet_events: int = 1000) -> None:
        self.columns = columns
        self.edges = columns.edges_array()
        self.cut = BinEdges(self.edges)
        self.scores = normal_scores(columns.cdf_array(), n_ref)
        d = len(columns.names)
        self.k = K_REF
        self.arl0 = budget_events * 2 * d
        self.h = siegmund_h(self.arl0, self.k)
        self.quiet_events = quiet_events
        self.s_pos = np.zeros(d)
        self.s_neg = np.zeros(d)
        self.since_pos = np.zeros(d, dtype=np.int64)
        self.since_neg = np.zeros(d, dtype=np.int64)
        self.quiet = np.zeros(d, dtype=np.int64)

    def __setstate__(self, state: dict) -> None:
        """Unpickle; a checkpoint from before the shared binning gets its edges object."""
        self.__dict__.update(state)
        if "cut" not in state:
            self.cut = BinEdges(self.edges)

    def update(self, X: np.ndarray, ts: np.ndarray, bins: np.ndarray | None = None
               ) -> CusumHits:
        """Alarms of the block ``X``; ``bins`` are its baseline bins when already computed."""
        B = self.cut.bins(X) if bins is None else bins
        out = cusum_update(B, np.ascontiguousarray(ts, dtype=np.int64), self.scores, self.k,
                           self.h, self.quiet_events, self.s_pos, self.s_neg, self.since_pos,
                           self.since_neg, self.quiet)
        return CusumHits(*out)

    def calibration(self) -> dict:
        return {"statistic": "two_sided_cusum_on_baseline_normal_scores", "k": self.k,
                "h": round(self.h, 3), "arl0_events_per_column_side": self.arl0 / 1.0}
