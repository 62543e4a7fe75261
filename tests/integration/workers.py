"""Helpers for tests that run their own inferwatch workers (crash, scale-out, outage).

Each such test uses its own app id and topic names on the session broker, so its
workers never consume the session worker's input and vice versa.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaProducer

from detectors.block import EventBlock
from schemas.encoders import event_json
from streams.checkpoint import CheckpointStore, ShardCheckpoint
from streams.settings import Settings


def topic_env(prefix: str, partitions: int) -> dict[str, str]:
    """Environment giving a worker its own app id and topics."""
    return {
        "INFERWATCH_APP_ID": f"{prefix}-app",
        "INFERWATCH_TOPIC_EVENTS": f"{prefix}-events",
        "INFERWATCH_TOPIC_BATCHES": f"{prefix}-batches",
        "INFERWATCH_TOPIC_DLQ": f"{prefix}-dlq",
        "INFERWATCH_TOPIC_INCIDENTS": f"{prefix}-incidents",
        "INFERWATCH_TOPIC_INCIDENTS_OCSF": f"{prefix}-ocsf",
        "INFERWATCH_TOPIC_ACTIONS": f"{prefix}-actions",
        "INFERWATCH_TOPIC_FORENSICS": f"{prefix}-forensics",
        "INFERWATCH_TOPIC_PARTITIONS": str(partitions),
    }


def settings_from(env: dict[str, str]) -> Settings:
    """The Settings a worker started with ``env`` reads."""
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Worker:
    """An ``inferwatch run`` subprocess with its log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        full = {**os.environ, "INFERWATCH_LOG_LEVEL": "info", "INFERWATCH_METRICS_PORT": "0",
                "INFERWATCH_SESSION_TIMEOUT_S": "6", "INFERWATCH_REBALANCE_TIMEOUT_S": "6",
                **env}
        self.fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "run"], env=full,
                                     stdout=self.fh, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.fh.close()

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.fh.close()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def block_events(block: EventBlock) -> list[dict[str, Any]]:
    """A block as JSON-ready event dicts."""
    out = []
    for i in range(len(block)):
        out.append({
            "event_id": str(block.event_id[i]), "timestamp_ms": int(block.ts[i]),
            "model_id": block.model_id, "model_version": block.model_version,
            "client_id": str(block.client_id[i]),
            "features": block.X[i].astype(float).tolist(),
            "prediction": str(block.prediction[i]),
            "scores": block.scores[i].astype(float).tolist(),
        })
    return out


def events_block(model: str, events: list[dict[str, Any]]) -> EventBlock:
    """Event dicts of one model (version "1") as a block, for the detection core."""
    return EventBlock(
        model, "1", np.array([e["event_id"] for e in events], dtype=object),
        np.array([e["timestamp_ms"] for e in events], dtype=np.int64),
        np.array([e["client_id"] for e in events], dtype=object),
        np.array([e["features"] for e in events], dtype=np.float32),
        np.array([e["scores"] for e in events], dtype=np.float32),
        np.array([max(e["scores"]) for e in events], dtype=np.float32),
        np.array([e["prediction"] for e in events], dtype=object))


def produce(bootstrap: str, topic: str, events: list[dict[str, Any]],
            key: Callable[[dict[str, Any]], bytes | None]) -> None:
    """Send events as JSON messages keyed by ``key(event)`` and wait for the acks."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    try:
        for ev in events:
            producer.send(topic, key=key(ev), value=event_json(ev))
        producer.flush()
    finally:
        producer.close()


def latest_checkpoints(settings: Settings, shards: int) -> dict[int, ShardCheckpoint | None]:
    """The newest checkpoint of each shard, read the way a restarting worker reads it."""
    store = CheckpointStore(settings.bootstrap(), settings.checkpoint_topic())
    try:
        return {r: store.load(r) for r in range(shards)}
    finally:
        store.close()


def wait_checkpointed(settings: Settings, ends: dict[tuple[str, int], int],
                      timeout_s: float = 120.0,
                      workers: list[Worker] | None = None) -> dict[int, ShardCheckpoint | None]:
    """Poll until the shards' checkpoints cover the input up to ``ends``."""
    shards = settings.topic_partitions
    deadline = time.monotonic() + timeout_s
    while True:
        ckpts = latest_checkpoints(settings, shards)
        done = all(
            (c := ckpts.get(p)) is not None and c.offsets.get((t, p), 0) >= end
            for (t, p), end in ends.items() if end > 0
        )
        if done:
            return ckpts
        if workers and not any(w.alive() for w in workers):
            raise AssertionError("every worker exited:\n" + workers[0].tail())
        if time.monotonic() > deadline:
            tails = "\n---\n".join(w.tail() for w in workers or [])
            raise AssertionError(f"input not checkpointed in {timeout_s} s: "
                                 f"{ {r: c and c.offsets for r, c in ckpts.items()} } vs "
                                 f"{ends}\n{tails}")
        time.sleep(0.5)


def stream_ids(events: list[dict[str, Any]]) -> np.ndarray:
    return np.array([e["event_id"] for e in events])
