"""``inferwatch demo``: the whole pipeline on one machine in a minute.

Starts the embedded broker and an ``inferwatch run`` worker process, builds a golden
baseline from generated reference traffic, then publishes live traffic from benign
clients with three injected incidents in turn: a client flooding the API, a drop in
model confidence, and drift in two input features. Incident records are read back
from ``ml-incidents`` and printed as they arrive; a summary closes the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, TopicPartition

from benchmarks.synthetic import softmax_scores
from detectors.baseline import Profile, save_profiles
from detectors.block import EventBlock
from streams.broker import EmbeddedBroker
from streams.producer import InferenceProducer
from streams.records import decode_incident
from streams.settings import Settings
from streams.topics import ensure_topics

MODEL, VERSION, D, K = "fraud-scorer", "3", 8, 3
N_CLIENTS = 40


def _events(rng: np.random.Generator, n: int, t0: float, t1: float, *, clients: np.ndarray,
            shift: float = 0.0, blur: float = 0.0, seq: list[int]) -> EventBlock:
    X = rng.normal(0, 1, (n, D)).astype(np.float32)
    S = softmax_scores(X, K, rng)
    if shift:
        X[:, [1, 4]] += np.float32(shift)
    if blur:
        S = ((1 - blur) * S + blur / K).astype(np.float32)
    ts = np.sort(rng.uniform(t0, t1, n)).astype(np.int64)
    ids = np.array([f"demo-{seq[0] + i}" for i in range(n)], dtype=object)
    seq[0] += n
    return EventBlock(MODEL, VERSION, ids, ts, clients, X, S, S.max(axis=1),
                      np.array([str(c) for c in S.argmax(axis=1)], dtype=object))


def _publish(producer: InferenceProducer, b: EventBlock) -> None:
    producer.send_batch(b.model_id, b.model_version, b.event_id, b.ts, b.client_id,
                        b.prediction, b.X, b.scores)


def _printer(bootstrap: str, topic: str, seen: Counter, stop: threading.Event,
             quiet: bool) -> None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, consumer_timeout_ms=500)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    while not stop.is_set():
        for msg in consumer:
            rec = decode_incident(msg.value)
            seen[(rec["detector"], rec["status"])] += 1
            if not quiet:
                who = f" client={rec['client_id']}" if rec.get("client_id") else ""
                print(f"  {rec['status'].upper():8} {rec['severity']:8} {rec['detector']:16}"
                      f"{who}\n           {rec['summary']}", flush=True)
    consumer.close()


def generate_traffic(producer: InferenceProducer, seconds: float, rate: float,
                     rng: np.random.Generator, seq: list[int], attacks: bool = True) -> int:
    """Publish live benign traffic for ``seconds`` (event time = wall clock).

    With ``attacks`` a scraper floods the API at 20-35 % of the run, the model's
    confidence drops at 45-65 % and two features drift from 70 % on. Returns events sent.
    """
    clients = np.array([f"tenant-{i}" for i in range(N_CLIENTS)], dtype=object)
    sent = 0
    t_start = time.time()
    tick = 0.25
    while (elapsed := time.time() - t_start) < seconds:
        t0 = time.time() * 1000
        phase = (elapsed / seconds) if attacks else 0.0
        n = int(rng.poisson(rate * tick))
        blur = 0.5 if 0.45 <= phase < 0.65 else 0.0
        shift = 1.0 if phase >= 0.7 else 0.0
        _publish(producer, _events(rng, n, t0, t0 + tick * 1000, clients=rng.choice(clients, n),
                                   shift=shift, blur=blur, seq=seq))
        sent += n
        if 0.2 <= phase < 0.35:
            m = int(30 * rate * tick / N_CLIENTS)
            _publish(producer, _events(rng, m, t0, t0 + tick * 1000,
                                       clients=np.full(m, "scraper-9", dtype=object), seq=seq))
            sent += m
        producer.flush()
        time.sleep(max(0.0, tick - (time.time() * 1000 - t0) / 1000))
    return sent


def reference_profile(rng: np.random.Generator, rate: float, seq: list[int]) -> Profile:
    """Golden baseline from 30 s of benign traffic an hour ago."""
    clients = np.array([f"tenant-{i}" for i in range(N_CLIENTS)], dtype=object)
    now = time.time() * 1000
    n_ref = int(rate * 30)
    ref = _events(rng, n_ref, now - 3_600_000, now - 3_600_000 + 30_000,
                  clients=rng.choice(clients, n_ref), seq=seq)
    return Profile.build(ref, source="demo reference traffic")


def _count(bootstrap: str, topic: str) -> int:
    from streams.checkpoint import PartitionReader

    reader = PartitionReader(bootstrap)
    try:
        return reader.end(topic, 0)
    finally:
        reader.close()


def run_demo(seconds: float = 60.0, rate: float = 400.0, quiet: bool = False) -> int:
    """Broker, worker, traffic, live incidents, summary. Exit 0 if all three were detected."""
    rng = np.random.default_rng(7)
    seq = [0]
    workdir = Path(tempfile.mkdtemp(prefix="inferwatch-demo-"))
    broker = EmbeddedBroker().start()
    settings = Settings(broker=broker.url)
    worker = None
    stop = threading.Event()
    seen: Counter = Counter()
    wanted = {"query_flood", "confidence_shift", "drift"}
    dead = 0
    try:
        print(f"embedded broker on {broker.bootstrap}", flush=True)
        ensure_topics(broker.bootstrap, settings.all_topics())
        profile = reference_profile(rng, rate, seq)
        save_profiles([profile], workdir)
        print(f"golden baseline of {MODEL}@{VERSION} built from {profile.n_ref:,} reference "
              "events", flush=True)
        env = {**os.environ, "INFERWATCH_BROKER": broker.url,
               "INFERWATCH_BASELINES": str(workdir), "INFERWATCH_COOLDOWN_MS": "10000",
               "INFERWATCH_RESOLVE_AFTER_MS": "8000", "INFERWATCH_LOG_LEVEL": "warn"}
        log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - closed with the worker
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "run"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=log)
        printer = threading.Thread(target=_printer, daemon=True, args=(
            broker.bootstrap, settings.topic_incidents, seen, stop, quiet))
        printer.start()
        print(f"worker started; sending {seconds:g} s of traffic at ~{rate:g} events/s: "
              f"flood at {0.2 * seconds:.0f} s, confidence drop at {0.45 * seconds:.0f} s, "
              f"drift at {0.7 * seconds:.0f} s", flush=True)
        with InferenceProducer(broker.bootstrap) as producer:
            producer.send_raw(b'{"event_id": "broken"')  # shows the dead-letter path
            sent = generate_traffic(producer, seconds, rate, rng, seq)
        print(f"sent {sent:,} events; waiting for the worker to finish", flush=True)
        deadline = time.time() + 30
        while time.time() < deadline and not wanted <= {d for d, _ in seen}:
            time.sleep(0.5)
        time.sleep(2)
        dead = _count(broker.bootstrap, settings.topic_dlq)
    finally:
        stop.set()
        if worker:
            worker.terminate()
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
        broker.stop()
    print("\nsummary: incident records by detector and status")
    for (det, status), n in sorted(seen.items()):
        print(f"  {det:18} {status:9} {n}")
    print(f"  dead letters: {dead}")
    missing = wanted - {d for d, _ in seen}
    if missing:
        print(f"not detected in this run: {', '.join(sorted(missing))}; worker log: "
              f"{workdir / 'worker.log'}")
        return 1
    return 0
