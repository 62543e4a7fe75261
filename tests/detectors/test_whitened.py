"""The whitened multi-window mean-shift test and the flood own-history test, on edge cases.

Edge cases (empty and single-event blocks, constant features, huge values), block-size
invariance, pickling mid-stream, the calibration on benign and skewed streams, and the
detections they exist for: a shift spread over correlated features, and a quiet client
flooding below the busiest clients of a heavy-tailed population.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from benchmarks.synthetic import make_block
from detectors.baseline import Profile
from detectors.config import DetectorConfig
from detectors.drift import DriftDetector
from detectors.engine import DetectionEngine
from detectors.flood import FloodDetector, nb_upper_tail_at_most
from detectors.whitened import WhitenedShift, gamma_upper, pearson3_upper, window_scales

CFG = DetectorConfig(window=400, step=50)


def _shift(X: np.ndarray, cfg: DetectorConfig = CFG) -> WhitenedShift:
    ref = make_block(n=X.shape[0], d=X.shape[1], seed=1)
    ref.X = X.astype(np.float32)
    p = Profile.build(ref)
    return WhitenedShift(p.features, p.sample_rows(), p.n_ref, cfg)


def _correlated(rng: np.random.Generator, n: int, d: int = 6) -> np.ndarray:
    base = rng.normal(size=(n, 1))
    return (0.8 * base + 0.6 * rng.normal(size=(n, d))).astype(np.float32)


def test_window_scales_double_from_step_to_window() -> None:
    assert window_scales(1000, 50) == [50, 100, 200, 400, 800]
    assert window_scales(30, 50) == [30]


def test_gamma_and_pearson_quantiles() -> None:
    # Gamma(1) is Exp(1): P(G > x) = exp(-x).
    assert gamma_upper(1.0, 1e-6) == pytest.approx(np.log(1e6), rel=1e-6)
    # Chi-square(4) = 2 Gamma(2): upper 1e-3 quantile 18.4668.
    assert 2 * gamma_upper(2.0, 1e-3) == pytest.approx(18.4668, rel=1e-4)
    # A Pearson III law with chi-square(10)'s moments is chi-square(10): 29.588 at 1e-3.
    assert pearson3_upper(10.0, 20.0, np.sqrt(0.8), 1e-3) == pytest.approx(29.588, rel=1e-3)


def test_empty_and_single_event_blocks() -> None:
    det = _shift(np.random.default_rng(0).normal(size=(3000, 3)))
    assert len(det.update(np.empty((0, 3), np.float32), np.empty(0, np.int64))) == 0
    assert len(det.update(np.zeros((1, 3), np.float32), np.zeros(1, np.int64))) == 0
    assert det.meta[1] == 1


def test_constant_feature_is_left_out_and_does_not_alarm() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 3))
    X[:, 1] = 7.0
    det = _shift(X)
    assert det.d == 2 and det.keep.tolist() == [0, 2]
    Y = rng.normal(size=(4000, 3))
    Y[:, 1] = 7.0
    assert len(det.update(Y, np.arange(4000))) == 0
    all_constant = _shift(np.full((3000, 2), 3.0))
    assert not all_constant.enabled
    assert len(all_constant.update(np.full((100, 2), 9.0), np.arange(100))) == 0


def test_very_large_values_stay_finite_and_fire() -> None:
    rng = np.random.default_rng(0)
    det = _shift(rng.normal(size=(3000, 3)))
    hits = det.update(np.full((200, 3), 3e38, np.float32), np.arange(200))
    assert len(hits) == 1 and np.isfinite(hits.value).all() and hits.rows[0] < 60


def test_block_boundaries_and_pickle_do_not_change_detections() -> None:
    rng = np.random.default_rng(3)
    det = _shift(_correlated(rng, 4000))
    X = np.concatenate([_correlated(rng, 3000), _correlated(rng, 3000) + 0.3])
    ts = np.arange(len(X))
    whole = det.update(X, ts).rows.tolist()
    det2 = _shift(_correlated(np.random.default_rng(3), 4000))
    got = []
    for lo in range(0, 2500, 700):
        got += (det2.update(X[lo:lo + 700], ts[lo:lo + 700]).rows + lo).tolist()
    det3 = pickle.loads(pickle.dumps(det2))
    for lo in range(2800, len(X), 450):
        got += (det3.update(X[lo:lo + 450], ts[lo:lo + 450]).rows + lo).tolist()
    assert whole and got == whole


@pytest.mark.parametrize("kind", ["correlated", "binary", "poisson"])
def test_benign_streams_stay_quiet(kind: str) -> None:
    """300 k benign events per stream: skewed features are where chi-square would fail."""
    rng = np.random.default_rng(11)

    def draw(n: int) -> np.ndarray:
        if kind == "binary":
            return (rng.random((n, 2)) < 0.1).astype(np.float32)
        if kind == "poisson":
            return rng.poisson(0.3, (n, 2)).astype(np.float32)
        return _correlated(rng, n, 8)

    det = _shift(draw(10_000), DetectorConfig())
    n = 300_000
    assert len(det.update(draw(n), np.arange(n))) == 0


def test_spread_shift_is_caught_before_any_single_feature_test() -> None:
    rng = np.random.default_rng(5)
    ref = make_block(n=6000, d=6, seed=1)
    ref.X = _correlated(rng, 6000)
    det = DriftDetector(Profile.build(ref), DetectorConfig())
    pre = make_block(n=5000, d=6, seed=2)
    pre.X = _correlated(rng, 5000)
    assert det.update(pre) == []
    post = make_block(n=2000, d=6, seed=3, start_ms=int(pre.ts[-1]) + 10)
    # Half the features up, half down: each moves 0.4 sd, against their correlation.
    post.X = _correlated(rng, 2000) + np.array([0.4, -0.4] * 3, dtype=np.float32)
    hits = det.update(post)
    first = min(hits, key=lambda h: h.timestamp_ms)
    assert first.evidence.get("window_events") is not None, first.summary
    assert int(np.flatnonzero(post.event_id == first.trigger_event_id)[0]) < 100


# -- flood: own history -----------------------------------------------------------------
def test_negative_binomial_tail() -> None:
    # r = 1: geometric, P(C >= c) = p^c.
    assert nb_upper_tail_at_most(10.0, 1.0, 0.1, 1.01e-10)
    assert not nb_upper_tail_at_most(10.0, 1.0, 0.1, 0.99e-10)
    assert not nb_upper_tail_at_most(0.0, 1.0, 0.1, 0.5)
    assert not nb_upper_tail_at_most(5.0, 1.0, 1.0, 0.5)


def _population(seed: int, n: int, start_ms: int, rates: np.ndarray):
    """Poisson arrivals of clients ``user-i`` at ``rates`` (q/s) until ``n`` events."""
    rng = np.random.default_rng(seed)
    dur = n / rates.sum() * 1000 * 1.2
    counts = rng.poisson(rates * dur / 1000)
    who = np.repeat(np.arange(rates.size), counts)
    ts = start_ms + (rng.random(who.size) * dur).astype(np.int64)
    order = np.argsort(ts, kind="stable")[:n]
    blk = make_block(n=order.size, seed=seed, start_ms=start_ms)
    blk.ts = ts[order]
    blk.client_id = np.array([f"user-{i}" for i in who[order]], dtype=object)
    return blk


def test_quiet_client_flooding_below_the_busiest_is_caught() -> None:
    rng = np.random.default_rng(0)
    rates = 0.01 * np.exp(1.5 * rng.normal(size=500))  # heavy tail: busiest ~0.5-1 q/s
    ref = _population(1, 20_000, 1_000_000, rates)
    det = FloodDetector(Profile.build(ref), DetectorConfig())
    start = int(ref.ts[-1]) + 1000
    pre = _population(2, 30_000, start, rates)
    assert det.update(pre) == []
    quiet = int(np.argsort(rates)[250])  # the median client floods at 30x its rate
    t0 = int(pre.ts[-1]) + 1
    flood = make_block(n=200, n_clients=1, seed=4, start_ms=t0,
                       interval_ms=1000 / (30 * rates[quiet]))
    flood.client_id = np.full(200, f"user-{quiet}", dtype=object)
    assert 30 * rates[quiet] < rates.max()
    hits = det.update(flood)
    assert hits and hits[0].client_id == f"user-{quiet}"
    assert hits[0].evidence["signal"] == "own_history"


def test_engine_pickles_mid_stream_with_identical_detections() -> None:
    cfg = DetectorConfig(window=500, warmup_events=3000)
    eng = DetectionEngine(cfg)
    eng.process(make_block(n=3000, seed=1))
    eng.process(make_block(n=2000, seed=2, start_ms=1_767_225_700_000))
    later = make_block(n=3000, seed=3, start_ms=1_767_225_800_000, shift={0: 0.6, 1: 0.6})
    clone = pickle.loads(pickle.dumps(eng))
    a = [(r["detector"], r["trigger_event_id"], r["status"]) for r in eng.process(later)]
    b = [(r["detector"], r["trigger_event_id"], r["status"]) for r in clone.process(later)]
    assert a and a == b
