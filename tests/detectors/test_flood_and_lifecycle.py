"""Flood kernel bounds and the incident lifecycle."""

from __future__ import annotations

from benchmarks.synthetic import make_block
from detectors.baseline import Profile
from detectors.config import DetectorConfig
from detectors.detection import Detection
from detectors.engine import DetectionEngine
from detectors.flood import FloodDetector
from detectors.incidents import IncidentTracker


def test_rotating_client_ids_stay_within_the_table() -> None:
    ref = make_block(n=5000, n_clients=50, interval_ms=20, seed=1)
    cfg = DetectorConfig(client_capacity=1024)
    det = FloodDetector(Profile.build(ref), cfg)
    nbytes = sum(a.nbytes for a in det.slot_arrays())
    blk = make_block(n=50_000, n_clients=10**9, interval_ms=1, seed=2, start_ms=int(ref.ts[-1]))
    det.update(blk)
    assert det.evictions > 40_000
    assert nbytes == 1024 * FloodDetector.bytes_per_client(3)
    assert (det.keys != 0).sum() <= 1024


def test_flood_is_reported_once_per_interval_not_per_event() -> None:
    ref = make_block(n=6000, n_clients=20, interval_ms=50, seed=1)
    det = FloodDetector(Profile.build(ref), DetectorConfig(flood_report_interval_ms=1000))
    blast = make_block(n=5000, n_clients=1, interval_ms=2, seed=3, start_ms=int(ref.ts[-1]))
    hits = det.update(blast)
    assert 5 <= len(hits) <= 11  # 10 s of flood, at most one report per second
    assert {h.client_id for h in hits} == {"client-0"}


def _det(ts: int, score: float = 2.0) -> Detection:
    return Detection("drift", "m", "1", None, score, 1.0, ts - 1000, ts, f"e{ts}", ts, "s")


def test_lifecycle_open_bounded_updates_resolve() -> None:
    tr = IncidentTracker(cooldown_ms=10_000, resolve_after_ms=30_000)
    recs = []
    for t in range(0, 120_000, 500):  # a condition lasting two minutes, checked twice a second
        recs += tr.observe([_det(t)])
        recs += tr.advance(t)
    recs += tr.advance(200_000)
    statuses = [r["status"] for r in recs]
    assert statuses[0] == "open" and statuses[-1] == "resolved"
    assert statuses.count("open") == 1 and statuses.count("resolved") == 1
    assert statuses.count("update") <= 12
    assert len({r["incident_id"] for r in recs}) == 1
    assert sum(r["count"] for r in recs) == 240  # every detection accounted for
    assert recs[-1]["timestamp_ms"] == 119_500 + 30_000


def test_incident_ids_are_deterministic() -> None:
    a = IncidentTracker(10_000, 30_000).observe([_det(5000)])
    b = IncidentTracker(10_000, 30_000).observe([_det(5000)])
    assert a[0]["incident_id"] == b[0]["incident_id"]


def test_engine_gives_the_same_incidents_whatever_the_block_size() -> None:
    blocks = [make_block(n=3000, seed=1)]
    blocks.append(make_block(n=3000, seed=2, start_ms=int(blocks[0].ts[-1]) + 10))
    blocks.append(make_block(n=3000, seed=3, start_ms=int(blocks[1].ts[-1]) + 10,
                             shift={1: 1.0}, confidence_drop=0.3))
    flood = make_block(n=1500, seed=4, n_clients=1, interval_ms=1,
                       start_ms=int(blocks[1].ts[-1]) + 10, id_prefix="f")
    allb = [blocks[0], blocks[1], blocks[2], flood]
    cfg = DetectorConfig(warmup_events=3000)

    def run(chunk: int) -> list[tuple]:
        eng = DetectionEngine(cfg)
        out = []
        for b in allb:
            for a in range(0, len(b), chunk):
                out += eng.process(b.take(slice(a, a + chunk)))
        out += eng.finish()
        return sorted((r["detector"], r["incident_id"], r["status"], r["count"]) for r in out)

    big, small = run(100_000), run(137)
    assert big == small
    assert {r[0] for r in big} == {"drift", "confidence_shift", "query_flood"}
