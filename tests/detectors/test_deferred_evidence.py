"""Deferred evidence and the cross-block client key cache change no record.

The drift and confidence detectors hand out detections whose summary and evidence are
computed only when read (:mod:`detectors.detection`). The incident tracker reads them for
the records it emits and for each episode's latest detection, so records, checkpoints and
forensics are what eager evidence gave, at a fraction of the triage work.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

import numpy as np
import pytest

from benchmarks.synthetic import make_block
from detectors import client_table, drift
from detectors.baseline import Profile
from detectors.block import EventBlock
from detectors.config import DetectorConfig
from detectors.detection import Detection
from detectors.engine import DetectionEngine
from detectors.incidents import IncidentTracker

CFG = DetectorConfig(window=500, step=25, cooldown_ms=5_000, resolve_after_ms=20_000)


def _det(ts: int, explain: Any = None, **kw: Any) -> Detection:
    return Detection("drift", "m", "1", None, 2.0, 1.0, ts - 1000, ts, f"e{ts}", ts,
                     explain=explain, **kw)


def test_explanation_runs_once_and_only_when_read() -> None:
    calls: list[int] = []

    def explain() -> tuple[str, dict]:
        calls.append(1)
        return "s", {"x": 1}

    d = _det(5, explain)
    assert d.deferred and calls == []
    assert d.evidence == {"x": 1} and d.summary == "s" and calls == [1]
    assert not d.deferred
    d.evidence = {"y": 2}
    assert d.evidence == {"y": 2} and calls == [1]


def test_pickle_resolves_the_explanation() -> None:
    d = _det(5, lambda: ("s", {"x": 1}))  # a lambda does not pickle: it must be resolved
    back = pickle.loads(pickle.dumps(d))
    assert back == d and not back.deferred and back.evidence == {"x": 1}
    assert back.key == ("drift", "m", "1", "")


def test_state_of_the_former_dataclass_still_loads() -> None:
    """Checkpoints written when Detection was a slotted dataclass: ``(None, {slot: v})``."""
    d = Detection.__new__(Detection)
    fields = {"detector": "drift", "model_id": "m", "model_version": "1", "client_id": None,
              "score": 2.0, "threshold": 1.0, "window_start_ms": 0, "window_end_ms": 9,
              "trigger_event_id": "e", "timestamp_ms": 9, "summary": "s", "evidence": {"a": 1}}
    d.__setstate__((None, fields))
    assert d == Detection(**fields)


def test_tracker_explains_records_and_latest_only() -> None:
    """A condition checked 240 times: only the records' detections (and each call's last,
    kept by the episode) are explained, and the records equal eager ones."""
    explained: list[int] = []

    def make(t: int) -> Detection:
        def explain() -> tuple[str, dict]:
            explained.append(t)
            return f"s{t}", {"t": t}
        return _det(t, explain)

    lazy, eager = IncidentTracker(10_000, 30_000), IncidentTracker(10_000, 30_000)
    recs_lazy, recs_eager = [], []
    for lo in range(0, 120_000, 5_000):  # 24 calls of 10 checks each
        ts = range(lo, lo + 5_000, 500)
        recs_lazy += lazy.observe([make(t) for t in ts]) + lazy.advance(lo)
        recs_eager += eager.observe([_det(t, summary=f"s{t}", evidence={"t": t}) for t in ts]) \
            + eager.advance(lo)
    recs_lazy += lazy.advance(300_000) + lazy.flush()
    recs_eager += eager.advance(300_000) + eager.flush()
    assert recs_lazy == recs_eager
    assert len(explained) <= 2 * 24
    assert {r["evidence"]["t"] for r in recs_lazy} <= set(explained)


def _drift_stream() -> tuple[Profile, list[EventBlock]]:
    ref = make_block(n=6000, d=8, seed=1, n_clients=40)
    t = int(ref.ts[-1]) + 1
    blocks = []
    for s in range(2, 14):
        shift = {2: 0.8, 5: -0.6} if s >= 5 else None
        b = make_block(n=1500, d=8, seed=s, n_clients=40, start_ms=t, shift=shift)
        t = int(b.ts[-1]) + 1
        blocks.append(b)
    return Profile.build(ref), blocks


class EagerTracker(IncidentTracker):
    """The tracker as it was: every detection explained as soon as it is made."""

    def observe(self, detections: list[Detection]) -> list[dict[str, Any]]:
        for d in detections:
            d.materialize()
        return super().observe(detections)


def _run(engine: DetectionEngine, blocks: list[EventBlock]) -> list[dict[str, Any]]:
    out = []
    for b in blocks:
        out += engine.process(b)
    return out + engine.finish()


def test_engine_records_equal_eager_evidence_with_far_less_triage(
        monkeypatch: pytest.MonkeyPatch) -> None:
    prof, blocks = _drift_stream()
    calls = {"n": 0}
    real = drift.triage

    def counting(*a: Any, **k: Any) -> dict:
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(drift, "triage", counting)
    eager = DetectionEngine(CFG, {prof.key: prof})
    eager.tracker = EagerTracker(CFG.cooldown_ms, CFG.resolve_after_ms)
    want = _run(eager, blocks)
    eager_calls, calls["n"] = calls["n"], 0
    lazy = DetectionEngine(CFG, {prof.key: prof})
    got = _run(lazy, blocks)
    assert got == want
    assert any(r["detector"] == "drift" and r["status"] == "open" for r in got)
    assert eager.detections["drift"] > 100  # fires on most checks once under way ...
    assert calls["n"] * 5 < eager_calls  # ... but only a few are explained


def test_engine_checkpoint_mid_drift_holds_no_deferred_work() -> None:
    prof, blocks = _drift_stream()
    a = DetectionEngine(CFG, {prof.key: prof})
    first = _run_blocks(a, blocks[:6])
    assert a.tracker.open and not any(ep.last.deferred for ep in a.tracker.open.values())
    b = pickle.loads(pickle.dumps(a))
    assert _run_blocks(b, blocks[6:]) == _run_blocks(a, blocks[6:])
    assert first


def _run_blocks(engine: DetectionEngine, blocks: list[EventBlock]) -> list[dict[str, Any]]:
    return [r for b in blocks for r in engine.process(b)]


# -- client keys ----------------------------------------------------------------------------
def _reference_keys(model: str, version: str, clients: np.ndarray) -> np.ndarray:
    """The keys as defined: blake2b-64 of model, version and client id, positive, never 0."""
    prefix = f"{model}\x1f{version}\x1f".encode()
    return np.array([int.from_bytes(hashlib.blake2b(prefix + str(c).encode(), digest_size=8)
                                    .digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF or 1
                     for c in clients], dtype=np.int64)


@pytest.fixture()
def small_cache(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(client_table, "KEY_CACHE_ENTRIES", 64)
    monkeypatch.setattr(client_table, "_key_cache", {})
    monkeypatch.setattr(client_table, "_key_cache_size", 0)
    return 64


def test_cached_keys_equal_the_definition(small_cache: int) -> None:
    rng = np.random.default_rng(1)
    for step in range(30):
        model = ("a", "1") if step % 3 else ("b", "2")
        ids = rng.integers(0, 50 + 10 * step, size=int(rng.integers(1, 300)))
        clients = np.array([f"c{i}" for i in ids], dtype=object)
        got = client_table.client_hashes(*model, clients)
        np.testing.assert_array_equal(got, _reference_keys(*model, clients))
        assert client_table._key_cache_size <= small_cache
        assert sum(map(len, client_table._key_cache.values())) == client_table._key_cache_size


def test_one_block_with_more_ids_than_the_cache(small_cache: int) -> None:
    clients = np.array([f"rot-{i}" for i in range(500)] * 2, dtype=object)
    got = client_table.client_hashes("m", "1", clients)
    np.testing.assert_array_equal(got, _reference_keys("m", "1", clients))
    assert client_table._key_cache_size <= small_cache
    again = client_table.client_hashes("m", "1", clients[:10])
    np.testing.assert_array_equal(again, got[:10])


def test_cached_keys_are_reused_across_blocks(monkeypatch: pytest.MonkeyPatch,
                                              small_cache: int) -> None:
    clients = np.array([f"c{i % 20}" for i in range(400)], dtype=object)
    client_table.client_hashes("m", "1", clients)
    hashed: list[object] = []
    real = client_table._hash_key
    monkeypatch.setattr(client_table, "_hash_key",
                        lambda p, c: hashed.append(c) or real(p, c))
    client_table.client_hashes("m", "1", clients[::-1].copy())
    assert hashed == []
    client_table.client_hashes("m", "1", np.array(["c3", "new"], dtype=object))
    assert hashed == ["new"]
