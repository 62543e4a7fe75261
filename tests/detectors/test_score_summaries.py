"""The compiled score summaries equal the plain numpy formulas, value for value."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.block import score_summaries


def _numpy_summaries(scores: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    n, k = scores.shape
    p = np.clip(scores.astype(np.float64), 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(axis=1) / np.log(k)
    top2 = np.partition(scores, k - 2, axis=1)[:, k - 2:]
    out = np.empty((n, 3), dtype=np.float32)
    out[:, 0] = confidence
    out[:, 1] = np.clip(entropy, 0.0, 1.0)
    out[:, 2] = top2[:, 1] - top2[:, 0]
    return out


@pytest.mark.parametrize("k", [2, 3, 7, 64])
def test_matches_numpy_with_ties_zeros_and_uniform_rows(k: int) -> None:
    rng = np.random.default_rng(k)
    S = rng.dirichlet(np.full(k, 0.3), 5000).astype(np.float32)
    S[:10] = 0.0  # all-zero rows (clipped logs)
    S[10:20] = np.float32(1.0 / k)  # every class tied
    S[20:30, :2] = np.float32(0.5)  # a tie for the top
    S[20:30, 2:] = 0.0
    conf = S.max(axis=1)
    got = score_summaries(S, conf)
    want = _numpy_summaries(S, conf)
    assert got.dtype == np.float32 and got.shape == (5000, 3)
    np.testing.assert_array_equal(got, want)
    assert (got[10:20, 2] == 0).all() and (got[20:30, 2] == 0).all()


def test_strided_input_is_accepted() -> None:
    S = np.random.default_rng(1).dirichlet(np.ones(4), 200).astype(np.float32)
    wide = np.repeat(S, 2, axis=1)[:, ::2]  # not contiguous
    np.testing.assert_array_equal(score_summaries(wide, wide.max(axis=1)),
                                  _numpy_summaries(S, S.max(axis=1)))
