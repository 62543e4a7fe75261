"""An engine pickled by the previous version keeps detecting exactly like one that never
stopped, once it is loaded by this one.

Checkpoints are pickled engines. This round changed the state layout: a shared binning
object in the CUSUM, whitened and extraction detectors, extraction histories stored
query-major, a sorted copy of each client's distances. An old checkpoint unpickles into
the new classes without complaint, so a missing piece would only fail at the next step.
It would fail in every step after an upgrade, and every batch would be dead-lettered.
The test rebuilds the previous layout from a live engine, round-trips it through pickle,
and requires the same incident records as the engine it came from.
"""

from __future__ import annotations

import pickle

import numpy as np

from benchmarks.synthetic import make_block
from detectors.baseline import Profile
from detectors.config import DetectorConfig
from detectors.engine import DetectionEngine
from detectors.extraction import ExtractionDetector

D = 6


def _as_previous_version(engine: DetectionEngine) -> DetectionEngine:
    """A copy of ``engine`` with the state layout the previous version wrote."""
    old = pickle.loads(pickle.dumps(engine))
    for dets in old.models.values():
        drift, conf, _flood, extraction = dets.detectors
        for cusum in (drift.window.cusum, conf.window.cusum):
            del cusum.cut
            cusum.n_edges = np.isfinite(cusum.edges).sum(axis=1)
        shift = drift.shift
        shift.edges = shift.columns.edges_array()
        shift.n_edges = np.isfinite(shift.edges).sum(axis=1)
        del shift.cut
        assert isinstance(extraction, ExtractionDetector)
        del extraction.cal.cut
        st = extraction.state
        st.hist = np.ascontiguousarray(st.hist.transpose(0, 2, 1))
        st.g_hist = np.ascontiguousarray(st.g_hist.T)
        del st.sdists
    return old


def _records(engine: DetectionEngine, blocks: list) -> list[tuple]:
    out = []
    for b in blocks:
        for rec in engine.process(b):
            out.append((rec["detector"], rec["status"], rec["trigger_event_id"],
                        rec.get("client_id"), round(float(rec["score"]), 9)))
    return out


def test_an_engine_from_the_previous_version_detects_like_the_current_one() -> None:
    ref = make_block(n=8_000, d=D, seed=1, n_clients=100)
    profile = Profile.build(ref)
    cfg = DetectorConfig(window=500, step=50)
    engine = DetectionEngine(cfg, {(profile.model_id, profile.model_version): profile})
    t = int(ref.ts[-1])
    before = make_block(n=6_000, d=D, seed=2, n_clients=100, start_ms=t)
    engine.process(before)
    # afterwards: a drift, and one client repeating a handful of queries (extraction)
    after = make_block(n=6_000, d=D, seed=3, n_clients=100, start_ms=int(before.ts[-1]),
                       shift={1: 0.8})
    after.client_id[::5] = "repeater"
    after.X[::5] = after.X[0] + np.float32(0.001)
    blocks = [after.take(slice(s, s + 1_500)) for s in range(0, len(after), 1_500)]

    loaded = pickle.loads(pickle.dumps(_as_previous_version(engine)))
    want = _records(engine, blocks)
    got = _records(loaded, blocks)
    assert {r[0] for r in want} >= {"drift", "extraction"}  # the upgrade path is exercised
    assert got == want
