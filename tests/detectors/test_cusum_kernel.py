"""The CUSUM kernel against a plain-Python statement of the same recursion.

Regression: the kernel once sized its alarm buffers at two per event, but every column
may alarm on the same event, so a short block of a model whose columns all shifted at
once wrote past the buffers (memory corruption in a worker). The cases below make many
columns alarm together in blocks of one to a few events, with and without a quiet
period, and require exactly the reference's alarms, levels and state.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.baseline import ColumnProfile
from detectors.cusum import BinnedCusum, cusum_update


def reference(X, ts, edges, n_edges, scores, k, h, quiet_events, s_pos, s_neg, since_pos,
              since_neg, quiet):
    """Row by row in Python floats (the kernel's specification): every column's update,
    then the row's alarms in column order, each with the levels after the update."""
    out = []
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            b = int(np.searchsorted(edges[j, : n_edges[j]], float(X[i, j]), side="right"))
            z = scores[j, b]
            sp, sn = s_pos[j] + z - k, s_neg[j] - z - k
            if sp > 0.0 and s_pos[j] == 0.0:
                since_pos[j] = ts[i]
            if sn > 0.0 and s_neg[j] == 0.0:
                since_neg[j] = ts[i]
            s_pos[j], s_neg[j] = max(sp, 0.0), max(sn, 0.0)
            if quiet[j] > 0:
                quiet[j] -= 1
        levels = np.maximum(s_pos, s_neg).copy()
        for j in range(X.shape[1]):
            if s_pos[j] > h or s_neg[j] > h:
                up = s_pos[j] > h
                if quiet[j] == 0:
                    out.append((i, j, 1 if up else -1, s_pos[j] if up else s_neg[j],
                                since_pos[j] if up else since_neg[j], levels))
                    quiet[j] = quiet_events
                s_pos[j] = s_neg[j] = 0.0
    return out


def _state(d: int) -> list[np.ndarray]:
    return [np.zeros(d), np.zeros(d), np.zeros(d, dtype=np.int64),
            np.zeros(d, dtype=np.int64), np.zeros(d, dtype=np.int64)]


@pytest.mark.parametrize("quiet_events", [0, 1, 3, 1000])
@pytest.mark.parametrize("seed", [0, 1])
def test_kernel_matches_reference_when_every_column_alarms_at_once(quiet_events: int,
                                                                  seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = 24
    cols = ColumnProfile.build(rng.normal(size=(4000, d)), [f"f{j}" for j in range(d)], 16)
    c = BinnedCusum(cols, n_ref=4000, budget_events=1e3)
    X = rng.normal(size=(400, d)).astype(np.float32)
    X[100:] += np.float32(4.0)  # every column far beyond the baseline: all alarm together
    X[rng.random(X.shape) < 0.05] = np.float32(c.edges[0, 5])  # values on a bin edge
    ts = np.arange(400, dtype=np.int64) * 10
    cuts = [0, 1, 2, 5, 101, 103, 110, 111, 250, 400]  # blocks of 1 to 150 events
    mine, ref = _state(d), _state(d)
    alarms = 0
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        got = cusum_update(c.cut.bins(X[lo:hi]), ts[lo:hi], c.scores, c.k, c.h,
                           quiet_events, *mine)
        want = reference(X[lo:hi], ts[lo:hi], c.edges, c.cut.n_edges, c.scores, c.k, c.h,
                         quiet_events, *ref)
        assert len(got[0]) == len(want)
        for m, (i, j, side, value, onset, level) in enumerate(want):
            assert (got[0][m], got[1][m], got[2][m], got[4][m]) == (i, j, side, onset)
            assert got[3][m] == value
            assert np.array_equal(got[5][m], level)
        alarms += len(want)
        for a, b in zip(mine, ref, strict=True):
            assert np.array_equal(a, b)
    assert alarms >= d  # the shift made every column alarm, many in the same row
