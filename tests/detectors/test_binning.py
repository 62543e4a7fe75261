"""Both binning kernels give numpy's ``searchsorted(side='right')`` bin of every value."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.binning import CHUNK, NARROW, BinEdges, bin_columns, bin_matrix


def _edges(rng: np.random.Generator, d: int) -> np.ndarray:
    """Quantile-like edges, some columns with fewer of them (padded with +inf)."""
    E = 17
    out = np.full((d, E), np.inf)
    for j in range(d):
        m = int(rng.integers(3, E + 1))
        out[j, :m] = np.sort(rng.normal(size=m))
    return out


def _expected(X: np.ndarray, edges: np.ndarray) -> np.ndarray:
    want = np.empty(X.shape, dtype=np.int64)
    for j in range(X.shape[1]):
        finite = edges[j][np.isfinite(edges[j])]
        col = X[:, j].astype(np.float64)
        want[:, j] = np.searchsorted(finite, col, side="right")
        want[np.isnan(col), j] = 0
    return want


@pytest.mark.parametrize("d", [1, 3, NARROW - 1, NARROW, 32])
def test_bins_match_searchsorted_on_edges_nan_and_infinities(d: int) -> None:
    rng = np.random.default_rng(d)
    edges = _edges(rng, d)
    n = 2 * CHUNK + 37  # a partial last chunk
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[:d, np.arange(d)] = edges[:, 0].astype(np.float32)  # on an edge (rounded)
    X[d:2 * d, np.arange(d)] = np.nextafter(edges[:, 1].astype(np.float32), np.float32(-9))
    X[-1], X[-2], X[-3] = np.nan, np.inf, -np.inf
    cut = BinEdges(edges)
    want = _expected(X, edges)
    got = cut.bins(X)
    np.testing.assert_array_equal(got, want)
    out = np.empty(X.shape, dtype=np.uint8)
    np.testing.assert_array_equal(bin_columns(X, cut.edges_t, cut.n_edges, out), want)
    np.testing.assert_array_equal(bin_matrix(X, cut.edges_t, np.empty_like(out)), want)
    for k in (1, 2, 3):  # every remainder of bin_matrix's four-row loop
        Xk = np.ascontiguousarray(X[k:])
        np.testing.assert_array_equal(bin_matrix(Xk, cut.edges_t, np.empty_like(Xk, np.uint8)),
                                      want[k:])


def test_empty_block() -> None:
    cut = BinEdges(np.array([[0.0, 1.0], [0.5, np.inf]]))
    assert cut.bins(np.empty((0, 2), dtype=np.float32)).shape == (0, 2)
