"""The worker's Prometheus endpoint reports what it consumed, rejected and published."""

from __future__ import annotations

import time
import urllib.request

import numpy as np
import pytest

from benchmarks.synthetic import block_to_events, make_block
from streams.producer import InferenceProducer

pytestmark = pytest.mark.usefixtures("worker")


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_count_events_and_dead_letters(broker, metrics_port: int) -> None:
    with InferenceProducer(broker.bootstrap) as producer:
        for ev in block_to_events(make_block(n=300, seed=31, model_id="it-metrics")):
            producer.send(ev)
        producer.send_raw(b"not json at all")
    deadline = time.monotonic() + 60
    m: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            m = scrape(metrics_port)
        except OSError:
            m = {}
        if m.get("inferwatch_events_in_total", 0) >= 300 and any(
                k.startswith("inferwatch_dead_letters_total") for k in m):
            break
        time.sleep(1)
    assert m.get("inferwatch_events_in_total", 0) >= 300
    assert m['inferwatch_dead_letters_total{error_code="bad_json"}'] >= 1
    assert m['inferwatch_messages_in_total{topic="inference-events"}'] >= 301
    assert m["inferwatch_batch_messages_count"] >= 1
    assert m["inferwatch_step_seconds_count"] == m["inferwatch_batch_messages_count"]
    assert m["inferwatch_events_rejected_total"] >= 1


def test_metrics_show_shards_checkpoints_and_lag(broker, metrics_port: int) -> None:
    with InferenceProducer(broker.bootstrap) as producer:
        for ev in block_to_events(make_block(n=200, seed=32, model_id="it-metrics-2")):
            producer.send(ev)
    deadline = time.monotonic() + 60
    m: dict[str, float] = {}
    while time.monotonic() < deadline:
        m = scrape(metrics_port)
        if m.get('inferwatch_checkpoints_total{result="ok"}', 0) >= 1 and any(
                k.startswith("inferwatch_consumer_lag") for k in m):
            break
        time.sleep(1)
    assert m["inferwatch_shards_held"] == 1  # the session worker holds the only shard
    assert m['inferwatch_checkpoints_total{result="ok"}'] >= 1
    assert m["inferwatch_checkpoint_bytes"] > 0
    lag = {k: v for k, v in m.items() if k.startswith("inferwatch_consumer_lag")}
    assert 'inferwatch_consumer_lag{partition="0",topic="inference-events"}' in lag


def test_metrics_count_client_evictions(broker, metrics_port: int) -> None:
    """More distinct clients than the extraction table holds (8,192 by default) show up
    as evictions, so an operator sees that the table is too small for the traffic."""
    n, per_message = 11_000, 2_000  # 1,000 warm-up events, then 10,000 distinct clients
    block = make_block(n=n, d=4, seed=33, model_id="it-metrics-evict")
    clients = np.array([f"rotating-{i}" for i in range(n)], dtype=object)
    with InferenceProducer(broker.bootstrap) as producer:
        for s in range(0, n, per_message):
            part = block.take(slice(s, s + per_message))
            producer.send_batch(part.model_id, part.model_version, part.event_id, part.ts,
                                clients[s: s + per_message], part.prediction, part.X,
                                part.scores)
    name = 'inferwatch_client_evictions_total{detector="extraction"}'
    deadline = time.monotonic() + 60
    m: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            m = scrape(metrics_port)
        except OSError:  # the endpoint is not up yet when this test runs first
            m = {}
        if m.get(name, 0) >= 10_000 - 8_192:
            break
        time.sleep(1)
    evictions = {k: v for k, v in m.items() if "evictions" in k}
    assert m.get(name, 0) >= 10_000 - 8_192, evictions  # at least the clients that did not fit
    assert m.get('inferwatch_client_evictions_total{detector="query_flood"}', 0) == 0
