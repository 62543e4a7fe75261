"""The broker goes away for 20 s mid-stream and comes back: the worker carries on.

The test runs its own embedded broker (the session's one must not be restarted). The
embedded broker keeps everything in memory, so when it comes back it has lost every
topic, offset and checkpoint; the test recreates the topics as an operator would (with
Apache Kafka they would still be there, with the data). The same worker process must
reconnect by itself, keep its detector state across the outage (its checkpoint counts
the events from before and after), and publish the incident of an attack that comes
after the outage.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.synthetic import make_block
from detectors.baseline import Profile, save_profiles
from streams.broker import EmbeddedBroker
from streams.records import decode_incident
from streams.topics import ensure_topics
from tests.integration.conftest import read_until
from tests.integration.workers import (
    Worker,
    block_events,
    produce,
    settings_from,
    topic_env,
    wait_checkpointed,
)

T0 = 1_767_500_000_000
MODEL = "outage-model"


def _part(start_s: int, seed: int, burst_client: str, n: int) -> list[dict]:
    benign = make_block(n=n, seed=seed, start_ms=T0 + start_s * 1000, interval_ms=10,
                        model_id=MODEL, id_prefix=f"p{seed}-")
    burst = make_block(n=300, seed=seed + 1, start_ms=T0 + (start_s + 5) * 1000,
                       interval_ms=2, model_id=MODEL, id_prefix=f"b{seed}-")
    burst.client_id[:] = burst_client
    return sorted(block_events(benign) + block_events(burst),
                  key=lambda e: (e["timestamp_ms"], e["event_id"]))


def _incident_for(bootstrap: str, topic: str, client: str, timeout_s: float) -> bool:
    msgs = read_until(bootstrap, topic, lambda ms: any(
        decode_incident(m.value)["client_id"] == client for m in ms), timeout_s=timeout_s)
    return any(decode_incident(m.value)["client_id"] == client for m in msgs)


def test_worker_survives_broker_outage(tmp_path: Path) -> None:
    base = tmp_path / "baselines"
    save_profiles([Profile.build(make_block(n=20000, seed=3, model_id=MODEL,
                                            start_ms=T0 - 400_000))], base)
    with EmbeddedBroker() as broker:
        env = {**topic_env("outage", 1), "INFERWATCH_BROKER": broker.url,
               "INFERWATCH_BASELINES": str(base), "INFERWATCH_CHECKPOINT_INTERVAL_S": "2"}
        settings = settings_from(env)
        ensure_topics(broker.bootstrap, settings.all_topics())
        key = lambda e: e["model_id"].encode()  # noqa: E731
        before, after = _part(0, 10, "before-outage", 2000), \
            _part(60, 20, "after-outage", 3000)  # longer: its end offset is distinct
        worker = Worker(env, tmp_path / "worker.log")
        try:
            produce(broker.bootstrap, settings.topic_events, before, key)
            assert _incident_for(broker.bootstrap, settings.topic_incidents, "before-outage",
                                 90), worker.tail()
            pid = worker.proc.pid

            broker.stop()
            time.sleep(20)
            assert worker.alive(), "the worker exited while the broker was away"
            broker.start()
            ensure_topics(broker.bootstrap, settings.all_topics())

            produce(broker.bootstrap, settings.topic_events, after, key)
            assert _incident_for(broker.bootstrap, settings.topic_incidents, "after-outage",
                                 120), worker.tail(80)
            # the first checkpoint after the outage can be slow, which stretches the
            # interval (at most 60 s, streams/bulk.py)
            ckpt = wait_checkpointed(settings, {(settings.topic_events, 0): len(after)},
                                     timeout_s=180, workers=[worker])[0]
            assert worker.alive() and worker.proc.pid == pid
        finally:
            worker.stop()
    # state survived the outage in memory: the checkpoint counts both sides of it
    assert ckpt is not None and ckpt.engine.events_seen == len(before) + len(after)
