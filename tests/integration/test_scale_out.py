"""Two workers on four partitions find what one detection core finds on the same input.

Producers here key events by ``client_id`` (not by model, as InferenceProducer does), so
most events land on a partition that is not their model's shard and must be forwarded
through the repartition topic. A second worker joins in the middle of the stream and
the first leaves before the end (two rebalances with shards handed over through their
checkpoints). The incidents opened must be the same (detector, model, client) set as the
detection core finds on the whole stream in production order, and every event must be
in detector state exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.synthetic import make_block
from detectors.baseline import Profile, save_profiles
from detectors.block import EventBlock
from detectors.config import DetectorConfig
from detectors.engine import DetectionEngine
from streams.broker import EmbeddedBroker
from streams.checkpoint import PartitionReader
from streams.pipeline import content_hash
from streams.records import decode_incident
from streams.sharding import shard_of
from streams.topics import ensure_topics
from tests.integration.conftest import read_until
from tests.integration.workers import (
    Worker,
    block_events,
    events_block,
    produce,
    settings_from,
    topic_env,
    wait_checkpointed,
)

T0 = 1_767_400_000_000
SHARDS = 4
MODELS = [f"so-model-{i}" for i in range(4)]


def _benign(model: str, start_s: float, end_s: float, seed: int, **kw: object) -> EventBlock:
    n = int((end_s - start_s) * 100)
    return make_block(n=n, seed=seed, start_ms=T0 + int(start_s * 1000), interval_ms=10,
                      model_id=model, id_prefix=f"{model}-{seed}-", **kw)


def _as_client(block: EventBlock, client: str) -> EventBlock:
    block.client_id = np.array([client] * len(block), dtype=object)
    block.event_id = np.array([f"{client}-{e}" for e in block.event_id], dtype=object)
    return block


def _merge(*blocks: EventBlock) -> list[dict]:
    return sorted((e for b in blocks for e in block_events(b)),
                  key=lambda e: (e["timestamp_ms"], e["event_id"]))


def _offline_opens(profiles: dict, events: list[dict]) -> set[tuple[str, str, str | None]]:
    eng = DetectionEngine(DetectorConfig(), profiles)
    opened: set[tuple[str, str, str | None]] = set()
    for i in range(0, len(events), 2000):  # production order, in steps like the worker's
        chunk = events[i:i + 2000]
        for model in dict.fromkeys(e["model_id"] for e in chunk):
            mine = [e for e in chunk if e["model_id"] == model]
            blk = events_block(model, mine)
            opened |= {(r["detector"], r["model_id"], r["client_id"])
                       for r in eng.process(blk) if r["status"] == "open"}
    return opened


def test_two_workers_same_incidents_as_one_core(broker: EmbeddedBroker, tmp_path: Path) -> None:
    assert len({shard_of(m, SHARDS) for m in MODELS}) >= 2
    profiles = {(m, "1"): Profile.build(_benign(m, -600, -60, seed=50 + i))
                for i, m in enumerate(MODELS)}
    base = tmp_path / "baselines"
    save_profiles(list(profiles.values()), base)
    a, b, c, _ = MODELS
    parts = [
        _merge(*(_benign(m, 0, 20, 60 + i) for i, m in enumerate(MODELS)),
               _as_client(make_block(n=400, seed=71, start_ms=T0 + 5000, interval_ms=2.5,
                                     model_id=b), "burst-client")),
        _merge(*(_benign(m, 20, 45, 80 + i) for i, m in enumerate(MODELS[:2] + MODELS[3:])),
               _benign(c, 20, 45, 85, shift={0: 1.5, 3: 1.0}),
               _as_client(make_block(n=400, seed=86, start_ms=T0 + 30000, interval_ms=2.5,
                                     model_id=a), "flooder")),
        _merge(*(_benign(m, 45, 60, 90 + i) for i, m in enumerate(MODELS))),
    ]
    expected = _offline_opens(profiles, [e for p in parts for e in p])
    assert ("query_flood", b, "burst-client") in expected
    assert ("query_flood", a, "flooder") in expected
    assert ("drift", c, None) in expected

    env = {**topic_env("scale", SHARDS), "INFERWATCH_BROKER": broker.url,
           "INFERWATCH_BASELINES": str(base), "INFERWATCH_CHECKPOINT_INTERVAL_S": "1"}
    settings = settings_from(env)
    ensure_topics(broker.bootstrap, settings.all_topics(), partitions=SHARDS)
    by_client = lambda e: e["client_id"].encode()  # noqa: E731

    first = Worker(env, tmp_path / "w1.log")
    second: Worker | None = None
    try:
        produce(broker.bootstrap, settings.topic_events, parts[0], by_client)
        time.sleep(3)
        second = Worker(env, tmp_path / "w2.log")  # joins mid-stream: rebalance
        time.sleep(6)
        produce(broker.bootstrap, settings.topic_events, parts[1], by_client)
        time.sleep(4)
        first.stop()  # leaves mid-stream: its shards move to the second worker
        produce(broker.bootstrap, settings.topic_events, parts[2], by_client)
        ckpts, ends = _wait_all(settings, [second])
    finally:
        first.stop()
        if second is not None:
            second.stop()

    forwarded = sum(n for (t, _), n in ends.items() if t == settings.repartition_topic())
    assert forwarded > 0, "the test meant to exercise forwarding between shards"
    w2 = (tmp_path / "w2.log").read_text()
    assert "holding shards" in w2
    total = sum(c.engine.events_seen for c in ckpts.values() if c is not None)
    assert total == sum(len(p) for p in parts), "an event was lost or counted twice"

    recs = [decode_incident(m.value) for m in
            read_until(broker.bootstrap, settings.topic_incidents, lambda ms: False, 5)]
    assert max(Counter(content_hash(r) for r in recs).values()) == 1
    got = {(r["detector"], r["model_id"], r["client_id"]) for r in recs if r["status"] == "open"}
    assert got == expected


def _wait_all(settings, workers: list[Worker]) -> tuple[dict, dict]:
    """Wait until the input and the repartition topic are fully checkpointed."""
    reader = PartitionReader(settings.bootstrap())
    try:
        deadline = time.monotonic() + 120
        while True:
            ends = {(t, p): reader.end(t, p) for t in (settings.topic_events,
                                                        settings.repartition_topic())
                    for p in range(SHARDS)}
            ckpts = wait_checkpointed(settings, ends, timeout_s=max(deadline - time.monotonic(),
                                                                   1), workers=workers)
            time.sleep(2)  # anything forwarded meanwhile?
            again = {(t, p): reader.end(t, p) for t, p in ends
                     if t == settings.repartition_topic()}
            if all(ends[k] == v for k, v in again.items()):
                return ckpts, ends
    finally:
        reader.close()
