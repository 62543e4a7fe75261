"""The block window kernel gives exactly the checks of a plain per-event computation.

:class:`~detectors.window_ks.WindowKS` (the block kernel :func:`window_ks_block`) is
compared, on random streams, with the reference per-event kernel
:func:`~detectors.window_ks.window_ks_update` and with a plain numpy computation built on
``np.searchsorted(side='right')``. The streams put values exactly on the float64 edges,
on the float32 neighbours of edges that float32 cannot hold, repeat values, and add NaN
and infinities; blocks are cut into 1, 7 and 777 events and at random; windows are
shorter than, equal to and longer than the step, and steps longer than the kernel's
longest segment. Both counting paths run (fewer than 16 columns: transposed segments;
16 or more: SIMD across columns), with columns that have 0 to 4 (mod 4) edges.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from detectors.window_ks import WindowHits, WindowKS, window_ks_update

FIELDS = ("rows", "window_start_ts", "ks", "psi", "means")


def _baseline(rng: np.random.Generator, d: int, n_e: int) -> tuple[np.ndarray, np.ndarray]:
    """``(d, n_e)`` sorted edges (+inf padded: ragged edge counts) and ``(d, n_e + 1)`` cdfs."""
    E = np.full((d, n_e), np.inf)
    C = np.ones((d, n_e + 1))
    for j in range(d):
        ne = n_e - int(rng.integers(0, 4)) if j % 3 == 1 else n_e
        ne = max(ne, 0)
        e = np.sort(rng.normal(size=ne))
        if j % 5 == 2 and ne:
            e = np.unique(np.round(e * 4) / 4)  # float32-exact edges, values land on them
            ne = e.size
        E[j, :ne] = e
        C[j, : ne + 1] = np.linspace(0.0, 1.0, ne + 2)[1:]
    return E, C


def _stream(rng: np.random.Generator, n: int, E: np.ndarray, special: bool) -> np.ndarray:
    d = E.shape[0]
    X = rng.normal(size=(n, d))
    X[n // 2 :, : max(1, d // 3)] += 0.7  # some drift: checks that cross, and some that do not
    finite = E[np.isfinite(E)]
    if finite.size:
        on = rng.random((n, d)) < 0.15
        X[on] = rng.choice(finite, size=int(on.sum()))  # exactly on a float64 edge
        near = rng.random((n, d)) < 0.15  # float32 just below / above an edge float32 lacks
        picked = rng.choice(finite, size=int(near.sum())).astype(np.float32)
        toward = np.where(rng.random(picked.size) < 0.5, -np.inf, np.inf).astype(np.float32)
        X[near] = np.nextafter(picked, toward)
    rep = rng.random((n, d)) < 0.1
    X[rep] = np.round(X[rep] * 2) / 2  # repeated values
    if special:
        for value, share in ((np.nan, 0.01), (np.inf, 0.005), (-np.inf, 0.005), (-0.0, 0.01)):
            X[rng.random((n, d)) < share] = value
    return X.astype(np.float32)


def _cuts(rng: np.random.Generator, n: int, how: int | str) -> list[int]:
    if how == "random":
        return sorted({0, n, *rng.integers(0, n + 1, 6).tolist()})
    return [*range(0, n, int(how)), n]


def _feed(w: WindowKS, X: np.ndarray, ts: np.ndarray, cuts: list[int]) -> WindowHits:
    """All checks of the stream fed in blocks ``cuts``, rows counted from the stream start."""
    bounds = zip(cuts[:-1], cuts[1:], strict=True)
    parts = [(lo, w.update(X[lo:hi], ts[lo:hi])) for lo, hi in bounds]
    d = X.shape[1]
    return WindowHits(
        np.concatenate([h.rows + lo for lo, h in parts] or [np.empty(0, np.int64)]),
        np.concatenate([h.window_start_ts for _, h in parts] or [np.empty(0, np.int64)]),
        *(np.vstack([getattr(h, f) for _, h in parts] or [np.empty((0, d), np.float32)])
          for f in ("ks", "psi", "means")),
    )


def _numpy_checks(X: np.ndarray, E: np.ndarray, C: np.ndarray, W: int, step: int) -> dict:
    """Every check, from bins by ``np.searchsorted(side='right')`` on the float64 edges.

    NaN is in bin 0 (it is at or above no edge). ``worst`` is the float64 value the kernel
    compares with its threshold; ``means`` come from sequential float64 prefix sums, the
    sums the kernel keeps.
    """
    n, d = X.shape
    X64 = X.astype(np.float64)
    ne = np.isfinite(E).sum(axis=1)
    bins = np.stack([np.searchsorted(E[j, : ne[j]], X64[:, j], side="right") for j in range(d)],
                    axis=1)
    bins[np.isnan(X64)] = 0
    with np.errstate(invalid="ignore"):  # inf - inf: NaN means, as in the kernel
        prefix = np.vstack([np.zeros((1, d)), np.cumsum(X64, axis=0)])  # sequential sums
        diffs = (prefix[W:] - prefix[:-W]) / W if n >= W else prefix[:0]
    out: dict[str, list] = {"rows": [], "worst": [], "ks": [], "means": []}
    for g in range(max(W, step) - 1, n, step):
        win = bins[g - W + 1 : g + 1]
        ks = np.zeros(d)
        for j in range(d):
            cum = np.cumsum(np.bincount(win[:, j], minlength=ne[j] + 1))
            ks[j] = np.max(np.abs(cum / W - C[j, : ne[j] + 1]), initial=0.0)
        out["rows"].append(g)
        out["worst"].append(max(ks.max(initial=0.0), 0.0))
        out["ks"].append(ks)
        out["means"].append(diffs[g + 1 - W])
    return {k: np.asarray(v) for k, v in out.items()}


CASES = [  # d, n_e, window, step, n, blocks, special values
    (3, 8, 100, 10, 900, 1, False),
    (5, 17, 97, 13, 1500, 7, True),
    (2, 6, 20, 50, 700, 777, True),  # step longer than the window
    (7, 5, 64, 64, 1200, "random", False),
    (17, 17, 100, 10, 1300, 7, True),  # >= 16 columns: SIMD across columns
    (32, 17, 250, 50, 2000, 777, False),
    (20, 18, 300, 241, 2500, "random", True),  # step > longest segment (240)
    (16, 19, 40, 300, 1400, 1, False),
    (33, 4, 1000, 50, 2600, 777, True),
]


@pytest.mark.parametrize(("d", "n_e", "window", "step", "n", "blocks", "special"), CASES)
def test_block_kernel_matches_reference_and_searchsorted(
    d: int, n_e: int, window: int, step: int, n: int, blocks: int | str, special: bool
) -> None:
    rng = np.random.default_rng([d, n_e, window, step])
    E, C = _baseline(rng, d, n_e)
    X = _stream(rng, n, E, special)
    ts = np.cumsum(rng.integers(1, 20, n)).astype(np.int64)
    cuts = _cuts(rng, n, blocks)

    w = WindowKS(E, C, window, step, threshold=-1.0)  # every check reported
    got = _feed(w, X, ts, cuts)

    # the reference per-event kernel (bins each event with _bin_of, ring of bins)
    legacy = [np.zeros((window, d), np.int16), np.zeros((window, d), np.float32),
              np.zeros(window, np.int64), np.zeros((d, n_e + 1), np.int32), np.zeros(d),
              np.zeros(3, np.int64)]
    parts = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        r = window_ks_update(X[lo:hi], ts[lo:hi], w.edges, w.n_edges, w.base_cdf, *legacy,
                             step, -1.0)
        parts.append((r[0] + lo, *r[1:]))
    ref = [np.concatenate([p[i] for p in parts]) for i in range(5)]
    np.testing.assert_array_equal(got.rows, ref[0])
    np.testing.assert_array_equal(got.window_start_ts, ref[1])
    np.testing.assert_array_equal(got.ks, ref[2])
    np.testing.assert_array_equal(got.psi, ref[3])
    if not special:  # the reference adds and subtracts its sums: close, not equal
        np.testing.assert_allclose(got.means, ref[4], rtol=1e-5, atol=1e-6)

    # plain numpy: the same checks, the same KS, window means from float64 prefix sums
    want = _numpy_checks(X, E, C, window, step)
    np.testing.assert_array_equal(got.rows, want["rows"])
    np.testing.assert_array_equal(got.window_start_ts, ts[want["rows"] - window + 1])
    np.testing.assert_array_equal(got.ks, want["ks"].astype(np.float32))
    if not special:
        np.testing.assert_array_equal(got.means, want["means"].astype(np.float32))

    # running totals: events at or above each edge, as searchsorted counts them
    X64 = X.astype(np.float64)
    for j in range(d):
        k = int(w.n_edges[j])
        np.testing.assert_array_equal(
            w.cum_ge[j, :k], (X64[:, j, None] >= E[j, None, :k]).sum(axis=0))
        assert not w.cum_ge[j, k:].any()
    # the ring holds the last `window` events, oldest at meta[0] once it is full
    m = min(n, window)
    order = (int(w.meta[0]) + np.arange(window)) % window if n >= window else np.arange(m)
    np.testing.assert_array_equal(w.ring_vals[order], X[n - m :])
    np.testing.assert_array_equal(w.ring_ts[order], ts[n - m :])


def test_off_by_one_binning_would_be_caught() -> None:
    """A value on an edge is in the bin above it; one float32 step below, in the bin below."""
    e = np.array([[-1.0, 0.1, 2.0]])  # 0.1 has no float32: its neighbours straddle it
    c = np.array([[0.25, 0.5, 0.75, 1.0]])
    below = np.nextafter(np.float32(0.1), np.float32(-np.inf))
    above = np.nextafter(below, np.float32(np.inf))  # the smallest float32 above 0.1
    assert np.float64(below) < 0.1 < np.float64(above)
    for d in (1, 16):  # both counting paths
        E, C = np.repeat(e, d, 0), np.repeat(c, d, 0)
        for v, ge in (((-1.0), [1, 0, 0]), (below, [1, 0, 0]), (above, [1, 1, 0]),
                      (2.0, [1, 1, 1]), (np.nan, [0, 0, 0]), (-np.inf, [0, 0, 0]),
                      (np.inf, [1, 1, 1])):
            w = WindowKS(E, C, window=5, step=5, threshold=-1.0)
            hits = w.update(np.full((5, d), v, np.float32), np.arange(5))
            np.testing.assert_array_equal(w.cum_ge, np.tile(np.array(ge) * 5, (d, 1)))
            cum = np.concatenate([5 - np.array(ge) * 5, [5]]) / 5  # events below each edge
            np.testing.assert_array_equal(hits.ks[0], np.float32(np.abs(cum - c[0]).max()))


@pytest.mark.parametrize("d", [4, 24])
def test_fires_exactly_when_ks_exceeds_the_threshold(d: int) -> None:
    """Thresholds at, just under and just over the KS a check reaches: the vectorised
    pre-test of the checks must not hide one that crosses (nor report one that does not)."""
    rng = np.random.default_rng(d)
    E, C = _baseline(rng, d, 9)
    X = _stream(rng, 3000, E, special=False)
    ts = np.arange(3000, dtype=np.int64)
    window, step = 200, 25
    want = _numpy_checks(X, E, C, window, step)
    for worst in np.quantile(want["worst"], [0.1, 0.5, 0.9, 1.0], method="nearest"):
        for thr in (np.nextafter(worst, -np.inf), worst, np.nextafter(worst, np.inf)):
            w = WindowKS(E, C, window, step, float(thr))
            got = _feed(w, X, ts, _cuts(rng, 3000, 777))
            np.testing.assert_array_equal(got.rows, want["rows"][want["worst"] > thr])


def test_pickle_and_copy_mid_stream_continue_identically() -> None:
    rng = np.random.default_rng(7)
    for d in (3, 20):
        E, C = _baseline(rng, d, 17)
        X = _stream(rng, 3000, E, special=True)
        ts = np.arange(3000, dtype=np.int64)
        a = WindowKS(E, C, 300, 30, threshold=0.05)
        a.update(X[:1234], ts[:1234])
        b, c = pickle.loads(pickle.dumps(a)), copy.deepcopy(a)
        for w in (b, c):
            for name, arr in a.state_arrays().items():
                np.testing.assert_array_equal(getattr(w, name), arr)
        ha = a.update(X[1234:], ts[1234:])
        for w in (b, c):
            hb = w.update(X[1234:], ts[1234:])
            for f in FIELDS:
                np.testing.assert_array_equal(getattr(hb, f), getattr(ha, f))
