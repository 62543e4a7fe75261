"""Extraction signals: each attack pattern caught quickly, benign clients left alone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from benchmarks.synthetic import make_block, softmax_scores
from detectors.baseline import Profile
from detectors.block import EventBlock
from detectors.config import DetectorConfig
from detectors.extraction import ExtractionDetector, binomial_upper, bytes_per_client
from detectors.shapiro import shapiro_coefficients, shapiro_w

D = 12


@pytest.fixture(scope="module")
def ref() -> EventBlock:
    return make_block(n=20_000, d=D, seed=1, n_clients=200)


@pytest.fixture()
def det(ref: EventBlock) -> ExtractionDetector:
    return ExtractionDetector(Profile.build(ref), DetectorConfig())


def attacker(X: np.ndarray, name: str, start_ms: int, every_ms: int = 500) -> EventBlock:
    rng = np.random.default_rng(0)
    X = X.astype(np.float32)
    S = softmax_scores(X, 3, rng)
    n = len(X)
    return EventBlock("fraud-scorer", "1", np.array([f"{name}-{i}" for i in range(n)], object),
                      start_ms + np.arange(n, dtype=np.int64) * every_ms,
                      np.full(n, name, dtype=object), X, S, S.max(axis=1),
                      np.array(["0"] * n, dtype=object))


def first_hit(det: ExtractionDetector, block: EventBlock) -> tuple[int, str]:
    hits = [h for h in det.update(block) if h.client_id == block.client_id[0]]
    assert hits, "not detected"
    return int(hits[0].trigger_event_id.rsplit("-", 1)[1]) + 1, hits[0].evidence["signal"]


def test_benign_clients_raise_nothing(det: ExtractionDetector, ref: EventBlock) -> None:
    hits = det.update(make_block(n=300_000, d=D, seed=2, n_clients=500,
                                 start_ms=int(ref.ts[-1]), interval_ms=2))
    assert hits == []


def test_near_identical_queries_caught_within_100(det, ref) -> None:
    rng = np.random.default_rng(1)
    X = np.repeat(ref.X[5:6], 300, axis=0) + rng.normal(0, 0.01, (300, D))
    n, signal = first_hit(det, attacker(X, "evader", int(ref.ts[-1])))
    assert n <= 100 and signal == "near_duplicates"


def test_uniform_random_queries_caught(det, ref) -> None:
    rng = np.random.default_rng(2)
    X = rng.uniform(ref.X.min(axis=0), ref.X.max(axis=0), (500, D))
    n, _ = first_hit(det, attacker(X, "scanner", int(ref.ts[-1])))
    assert n <= 500


def test_augmentation_around_seed_points_caught_within_500(det, ref) -> None:
    rng = np.random.default_rng(3)
    X = ref.X[rng.integers(0, 1000, 6)][rng.integers(0, 6, 600)] + rng.normal(0, 0.3, (600, D))
    n, _ = first_hit(det, attacker(X, "copier", int(ref.ts[-1])))
    assert n <= 500


def test_threshold_probing_caught(det, ref) -> None:
    rng = np.random.default_rng(4)
    X = np.repeat(ref.X[9:10], 400, axis=0).astype(np.float64)
    X[:, 2] = rng.uniform(-0.5, 0.5, 400)  # a narrow sweep of one feature
    X[:, 4] = rng.uniform(-0.5, 0.5, 400)
    n, _ = first_hit(det, attacker(X, "prober", int(ref.ts[-1])))
    assert n <= 200


def test_sybil_campaign_shows_at_model_level(det, ref) -> None:
    rng = np.random.default_rng(5)
    benign = make_block(n=10_000, d=D, seed=6, n_clients=300, start_ms=int(ref.ts[-1]))
    n_att = 600
    seeds = ref.X[rng.integers(0, 1000, 3)]
    X = (seeds[rng.integers(0, 3, n_att)] + rng.normal(0, 0.3, (n_att, D))).astype(np.float32)
    S = softmax_scores(X, 3, rng)
    ts = np.sort(rng.integers(int(benign.ts[0]), int(benign.ts[-1]), n_att))
    att = EventBlock("fraud-scorer", "1", np.array([f"s{i}" for i in range(n_att)], object), ts,
                     np.array([f"sybil-{i % 60}" for i in range(n_att)], object), X, S,
                     S.max(axis=1), np.array(["0"] * n_att, dtype=object))
    mix = EventBlock.concat([benign, att])
    mix = mix.take(np.argsort(mix.ts, kind="stable"))
    hits = det.update(mix)
    sybil = [h for h in hits if h.evidence["signal"] == "sybil"]
    assert sybil and sybil[0].client_id is None
    top = {c["client_id"] for c in sybil[0].evidence["population"]["top_clients"]}
    assert any(c.startswith("sybil-") for c in top)
    per_client = [h for h in hits if h.client_id and not h.client_id.startswith("sybil-")]
    assert per_client == []  # no benign client blamed


def test_whole_population_shift_does_not_flag_every_client(det, ref) -> None:
    shifted = make_block(n=20_000, d=D, seed=7, n_clients=100, start_ms=int(ref.ts[-1]),
                         shift={0: 1.5, 3: 1.5})
    hits = [h for h in det.update(shifted) if h.evidence["signal"] in (
        "out_of_distribution", "boundary_probing")]
    assert len({h.client_id for h in hits}) <= 2


def test_state_is_bounded_under_rotating_client_ids(ref) -> None:
    cfg = DetectorConfig(extraction_capacity=256)
    det = ExtractionDetector(Profile.build(ref), cfg)
    before = det.state.nbytes
    det.update(make_block(n=20_000, d=D, seed=8, n_clients=10**9, start_ms=int(ref.ts[-1])))
    assert det.state.nbytes == before
    assert int(det.state.stats[0]) > 10_000  # evictions happened
    model_level = 64 * 1024  # population window and recent-traffic ring, per model
    assert bytes_per_client(D) * 256 <= before <= bytes_per_client(D) * 256 + model_level


def test_shapiro_w_matches_scipy() -> None:
    rng = np.random.default_rng(9)
    for n in (20, 57, 100, 128, 300):
        x = rng.gamma(2.0, size=n)
        ours = shapiro_w(np.sort(x), shapiro_coefficients(n))
        assert ours == pytest.approx(stats.shapiro(x).statistic, abs=1e-6)


def test_binomial_upper_is_a_tail_bound() -> None:
    for m, p, a in [(128, 0.1, 1e-6), (16, 0.01, 1e-3), (64, 0.5, 1e-4)]:
        k = binomial_upper(m, p, a)
        assert stats.binom.sf(k, m, p) <= a < stats.binom.sf(k - 1, m, p)


@pytest.mark.parametrize("values", ["continuous", "ties"])
def test_sorted_distances_follow_the_ring(values: str) -> None:
    """The per-client sorted copy the normality test reads is always the ring, sorted:
    while it fills, once values start leaving, and with many exact ties (distance 0
    repeats under attack)."""
    from detectors.extraction import DISTANCES, _push_distance

    rng = np.random.default_rng(3)
    ring = np.zeros((3, DISTANCES), np.float32)  # one row per client; row 1 is tested
    srt = np.zeros((3, DISTANCES), np.float32)
    vals = (rng.random(700) if values == "continuous"
            else rng.choice([0.0, 0.5, 1.0, 2.0], 700)).astype(np.float32)
    for c, v in enumerate(vals):
        _push_distance(ring, srt, 1, c, v)
        nd = min(c + 1, DISTANCES)
        assert np.array_equal(srt[1, :nd], np.sort(ring[1, :nd]))
    assert not ring[[0, 2]].any() and not srt[[0, 2]].any()  # other clients untouched


def test_state_from_an_older_checkpoint_gets_its_sorted_distances() -> None:
    """A pickled state without the sorted copy (written by an earlier version) is rebuilt
    from the ring on load."""
    import pickle

    from detectors.extraction import DISTANCES, _ExtractionState

    st_ = _ExtractionState(4, 3)
    rng = np.random.default_rng(0)
    st_.nq[:] = [0, 1, 50, 400]
    st_.dists[:] = rng.random((4, DISTANCES))
    state = dict(st_.__dict__)
    del state["sdists"]
    old = _ExtractionState.__new__(_ExtractionState)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert np.array_equal(old.sdists[2, :49], np.sort(st_.dists[2, :49]))
    assert np.array_equal(old.sdists[3], np.sort(st_.dists[3]))
    assert not old.sdists[:2].any()


def test_state_with_dimension_major_history_is_transposed_on_load() -> None:
    """Checkpoints written before the history was stored query-major load into the new
    layout with every projected query in place (the sybil history too)."""
    import pickle

    from detectors.extraction import GLOBAL, HISTORY, _ExtractionState

    st_ = _ExtractionState(4, 20)
    rng = np.random.default_rng(1)
    st_.hist[:] = rng.random(st_.hist.shape)
    st_.g_hist[:] = rng.random(st_.g_hist.shape)
    state = dict(st_.__dict__)
    state["hist"] = np.ascontiguousarray(st_.hist.transpose(0, 2, 1))  # (cap, k, HISTORY)
    state["g_hist"] = np.ascontiguousarray(st_.g_hist.T)  # (k, GLOBAL)
    old = _ExtractionState.__new__(_ExtractionState)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert old.hist.shape[1] == HISTORY and old.g_hist.shape[0] == GLOBAL
    assert np.array_equal(old.hist, st_.hist) and np.array_equal(old.g_hist, st_.g_hist)
    assert old.hist.flags.c_contiguous and old.g_hist.flags.c_contiguous
