"""What the detectors derive from a block alone can be computed ahead (the worker's decode
thread does): preparing a block changes no detector state and no detection."""

from __future__ import annotations

import pickle

import numpy as np

from benchmarks.synthetic import make_block
from detectors.baseline import Profile
from detectors.block import derived_input
from detectors.config import DetectorConfig
from detectors.engine import DetectionEngine


def test_a_derived_input_is_computed_once_per_owner() -> None:
    block = make_block(n=10, seed=1)
    calls = []
    a, b = object(), object()

    def compute(tag: str) -> str:
        calls.append(tag)
        return tag

    assert derived_input(block, "x", a, lambda: compute("a")) == "a"
    assert derived_input(block, "x", a, lambda: compute("again")) == "a"
    # cached for another owner (a detector rebuilt from a checkpoint): computed again
    assert derived_input(block, "x", b, lambda: compute("b")) == "b"
    assert calls == ["a", "b"]
    assert block.take(slice(0, 5)).derived is None  # a new block starts empty


def _engine(prof: Profile) -> DetectionEngine:
    return DetectionEngine(DetectorConfig(window=500, step=50), {prof.key: prof})


def test_prepare_changes_no_state_and_no_detection() -> None:
    prof = Profile.build(make_block(n=5000, d=6, seed=1))
    first = make_block(n=3000, d=6, seed=2)
    start = int(first.ts[-1]) + 10
    second = make_block(n=6000, d=6, seed=3, start_ms=start, shift={1: 0.8, 4: 0.8})
    second.client_id[2000:2600] = "flooder"
    second.ts[2000:2600] = np.sort(second.ts[2000:2600])

    plain, ahead = _engine(prof), _engine(prof)
    assert plain.process(first) == [] and ahead.process(first) == []
    again = second.take(slice(None))
    before = pickle.dumps(ahead.models)
    ahead.prepare(again)
    assert pickle.dumps(ahead.models) == before
    assert {"bins", "whitened", "query_features", "score_summaries"} <= set(again.derived)
    assert again.client_keys is not None

    want = plain.process(second)
    got = ahead.process(again)
    assert want, "the drifted block should open incidents"
    assert [(r["incident_id"], r["status"], r["detector"]) for r in got] == \
        [(r["incident_id"], r["status"], r["detector"]) for r in want]
    assert pickle.dumps(ahead.models) == pickle.dumps(plain.models)


def test_prepare_of_a_model_still_warming_up_does_nothing() -> None:
    eng = DetectionEngine(DetectorConfig(warmup_events=3000))
    block = make_block(n=100, seed=1)
    eng.prepare(block)
    assert block.derived is None and block.client_keys is None
