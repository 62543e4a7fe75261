"""The drift/confidence window kernel and its calibration, on edge cases."""

from __future__ import annotations

import numpy as np

from benchmarks.synthetic import make_block
from detectors.baseline import Profile, quantile_bins
from detectors.calibration import alpha_per_check, ks_threshold, poisson_upper
from detectors.config import DetectorConfig
from detectors.drift import DriftDetector
from detectors.window_ks import WindowKS


def _window(ref: np.ndarray, window: int = 100, step: int = 10, thr: float = 0.2) -> WindowKS:
    edges, cdfs = zip(*(quantile_bins(ref[:, j], 8) for j in range(ref.shape[1])), strict=True)
    width = max(len(e) for e in edges)
    E = np.full((len(edges), width), np.inf)
    C = np.ones((len(edges), width + 1))
    for j, (e, c) in enumerate(zip(edges, cdfs, strict=True)):
        E[j, : len(e)] = e
        C[j, : len(c)] = c
    return WindowKS(E, C, window, step, thr)


def test_empty_and_single_event_blocks() -> None:
    w = _window(np.random.default_rng(0).normal(size=(500, 2)))
    assert len(w.update(np.empty((0, 2), np.float32), np.empty(0, np.int64))) == 0
    assert len(w.update(np.zeros((1, 2), np.float32), np.zeros(1, np.int64))) == 0
    assert w.meta[1] == 1


def test_block_boundaries_do_not_change_detections() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(2000, 3))
    X = np.vstack([rng.normal(size=(500, 3)), rng.normal(1.0, 1.0, (500, 3))]).astype(np.float32)
    ts = np.arange(1000, dtype=np.int64)
    whole = _window(ref).update(X, ts)
    w = _window(ref)
    parts = [w.update(X[a:b], ts[a:b]) for a, b in [(0, 1), (1, 333), (333, 334), (334, 1000)]]
    offsets = [0, 1, 333, 334]
    rows = np.concatenate([p.rows + o for p, o in zip(parts, offsets, strict=True)])
    np.testing.assert_array_equal(rows, whole.rows)
    np.testing.assert_allclose(np.vstack([p.ks for p in parts]), whole.ks)


def test_constant_feature_does_not_alarm_and_change_does() -> None:
    ref = np.zeros((1000, 1))
    w = _window(ref)
    assert len(w.update(np.zeros((300, 1), np.float32), np.arange(300))) == 0
    hits = w.update(np.ones((300, 1), np.float32), np.arange(300, 600))
    assert len(hits) > 0 and hits.ks.max() == 1.0


def test_very_large_values_stay_finite() -> None:
    ref = np.random.default_rng(2).normal(0, 1e30, (1000, 1))
    w = _window(ref)
    hits = w.update(np.full((300, 1), 3e38, np.float32), np.arange(300))
    assert len(hits) > 0
    assert np.isfinite(hits.ks).all() and np.isfinite(hits.psi).all()


def test_threshold_follows_the_budget() -> None:
    loose = ks_threshold(1000, 5000, alpha_per_check(50, 1e4, 8))
    strict = ks_threshold(1000, 5000, alpha_per_check(50, 1e8, 8))
    assert strict > loose > 0
    assert poisson_upper(10, 1e-9) > poisson_upper(10, 1e-3) > 10


def test_benign_stream_gives_no_drift_within_budget() -> None:
    cfg = DetectorConfig(window=500, step=25)
    det = DriftDetector(Profile.build(make_block(n=5000, d=16, seed=10)), cfg)
    hits = sum(len(det.update(make_block(n=5000, d=16, seed=s))) for s in range(11, 31))
    assert hits == 0  # 100k benign events, budget 1e6: expect none


def test_drift_names_the_moved_features() -> None:
    det = DriftDetector(Profile.build(make_block(n=5000, d=10, seed=1)), DetectorConfig())
    det.update(make_block(n=2000, d=10, seed=2))
    hits = det.update(make_block(n=2000, d=10, seed=3, shift={3: 0.8, 7: -0.8}))
    assert hits
    moved = {m["name"] for h in hits for m in h.evidence["moved_features"]
             if m["over_threshold"]}
    assert moved == {"f3", "f7"}
    ks_hits = [h for h in hits if "max_ks" in h.evidence]
    assert ks_hits[-1].evidence["n_features_moved"] == 2
    cusum_hits = [h for h in hits if "change_estimated_at_ms" in h.evidence]
    assert cusum_hits and cusum_hits[0].timestamp_ms < ks_hits[0].timestamp_ms  # faster


def test_drift_triage_tells_spread_from_concentrated() -> None:
    from detectors.block import EventBlock

    prof = Profile.build(make_block(n=5000, d=6, seed=1))
    det = DriftDetector(prof, DetectorConfig())
    det.update(make_block(n=2000, d=6, seed=2))
    natural = det.update(make_block(n=2000, d=6, seed=3, shift={1: 1.0}))
    assert natural and natural[0].evidence["triage"] == "spread"

    det = DriftDetector(prof, DetectorConfig())
    det.update(make_block(n=2000, d=6, seed=2))
    mixed = make_block(n=2000, d=6, seed=4, n_clients=60)
    poison = np.random.default_rng(5).random(len(mixed)) < 0.15
    mixed.client_id[poison] = "client-7"  # one client sends 15 % of the traffic ...
    mixed.X[poison, 1] += 3.0  # ... with one feature pushed far out
    hits = det.update(EventBlock.concat([mixed]))
    assert hits and hits[0].evidence["triage"] == "concentrated"
    assert hits[0].evidence["triage_detail"]["top_clients"][0]["client_id"] == "client-7"


def test_block_kernel_matches_the_per_event_kernel() -> None:
    """WindowKS (running totals + snapshots) reports exactly the checks of the original
    per-event kernel, for windows shorter than the step and not multiples of it."""
    from detectors.window_ks import window_ks_update

    rng = np.random.default_rng(3)
    ref = rng.normal(size=(2000, 5))
    for window, step in [(100, 10), (97, 13), (20, 50), (64, 64)]:
        w = _window(ref, window, step, thr=-1.0)  # every check reported
        d, n_e = w.edges.shape
        legacy = [np.zeros((window, d), np.int16), np.zeros((window, d), np.float32),
                  np.zeros(window, np.int64), np.zeros((d, n_e + 1), np.int32),
                  np.zeros(d), np.zeros(3, np.int64)]
        X = np.vstack([rng.normal(size=(400, 5)), rng.normal(0.8, 1.0, (400, 5))])
        X = X.astype(np.float32)
        ts = np.arange(800, dtype=np.int64)
        for a, b in [(0, 1), (1, 250), (250, 251), (251, 800)]:
            new = w.update(X[a:b], ts[a:b])
            old = window_ks_update(X[a:b], ts[a:b], w.edges, w.n_edges, w.base_cdf, *legacy,
                                   step, -1.0)
            np.testing.assert_array_equal(new.rows, old[0])
            np.testing.assert_array_equal(new.window_start_ts, old[1])
            np.testing.assert_array_equal(new.ks, old[2])
            np.testing.assert_allclose(new.psi, old[3], rtol=1e-6)
            np.testing.assert_allclose(new.means, old[4], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w.window_shares(0),
                                   legacy[3][0, : w.n_edges[0] + 1] / window)
