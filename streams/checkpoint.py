"""Durable detector state: one checkpoint per shard on a Kafka topic.

A checkpoint is a shard's whole :class:`~detectors.engine.DetectionEngine` together with
the input offsets it has consumed, written in one piece, so state and position can never
disagree: after a crash the worker restores the engine and seeks its input to exactly
those offsets, and every event is reflected in detector state once. The worker commits
consumer-group offsets only after the checkpoint that covers them is acknowledged.

Layout on ``<app_id>-checkpoints`` (one partition per shard): the pickled and
zlib-compressed state, cut into chunks of at most :data:`CHUNK_BYTES` so no message
exceeds Kafka's default 1 MB limit. Each chunk carries headers ``inferwatch.ckpt`` (id),
``inferwatch.chunk`` (``i/n``) and, on the last chunk, ``inferwatch.digest``: SHA-256 of
the compressed state, or HMAC-SHA256 with ``INFERWATCH_CHECKPOINT_KEY`` when set. A
checkpoint is loaded only when all its chunks are present and the digest matches, so a
write interrupted by a crash falls back to the previous complete one, and a state
message that was not written by a worker holding the key is refused rather than
unpickled.

>>> blob = encode_state({"offsets": {("inference-events", 0): 42}}, key=None)
>>> chunks = split_chunks(blob, "ck1", key=None, chunk_bytes=16)
>>> decode_state(join_chunks([c for c, _ in chunks], chunks[-1][1], key=None))
{'offsets': {('inference-events', 0): 42}}
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import pickle
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

log = logging.getLogger("inferwatch")

#: Largest checkpoint message value (bytes): well under Kafka's default 1 MB.
CHUNK_BYTES = 512 * 1024

Headers = list[tuple[str, bytes]]


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or verified."""


def encode_state(state: Any, key: bytes | None) -> bytes:
    """Pickle and compress ``state`` (level 1: the state is mostly empty table slots)."""
    del key  # the digest is computed over the compressed bytes, see split_chunks
    return zlib.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 1)


def decode_state(blob: bytes) -> Any:
    """Inverse of :func:`encode_state` (only call on a verified blob)."""
    return pickle.loads(zlib.decompress(blob))  # noqa: S301 - digest verified first


def digest(blob: bytes, key: bytes | None) -> str:
    """SHA-256 of the blob, keyed (HMAC) when a checkpoint key is configured."""
    if key:
        return hmac.new(key, blob, hashlib.sha256).hexdigest()
    return hashlib.sha256(blob).hexdigest()


def split_chunks(blob: bytes, ckpt_id: str, key: bytes | None,
                 chunk_bytes: int = CHUNK_BYTES) -> list[tuple[bytes, Headers]]:
    """Cut ``blob`` into messages with the headers :func:`join_chunks` checks."""
    parts = [blob[i:i + chunk_bytes] for i in range(0, len(blob), chunk_bytes)] or [b""]
    out = []
    for i, part in enumerate(parts):
        headers = [("inferwatch.ckpt", ckpt_id.encode()),
                   ("inferwatch.chunk", f"{i}/{len(parts)}".encode())]
        if i == len(parts) - 1:
            headers.append(("inferwatch.digest", digest(blob, key).encode()))
        out.append((part, headers))
    return out


def join_chunks(values: list[bytes], last_headers: Headers, key: bytes | None) -> bytes:
    """Reassemble and verify a checkpoint's chunks (raises :class:`CheckpointError`)."""
    blob = b"".join(values)
    expected = dict(last_headers).get("inferwatch.digest", b"").decode()
    if not hmac.compare_digest(expected, digest(blob, key)):
        raise CheckpointError("checkpoint digest mismatch (corrupt, or written without the "
                              "configured INFERWATCH_CHECKPOINT_KEY)")
    return blob


def _chunk_info(headers: Headers) -> tuple[str, int, int] | None:
    h = dict(headers or [])
    try:
        i, n = h["inferwatch.chunk"].decode().split("/")
        return h["inferwatch.ckpt"].decode(), int(i), int(n)
    except (KeyError, ValueError):
        return None


@dataclass
class ShardCheckpoint:
    """What a shard's checkpoint holds."""

    shard: int
    engine: Any
    #: Next input offset per (topic, partition) that the engine has consumed up to.
    offsets: dict[tuple[str, int], int]
    #: End offset of the shard's ``ml-incidents`` partition when the checkpoint was taken:
    #: records after it were published from state newer than this checkpoint.
    incidents_end: int
    written_ms: int = field(default_factory=lambda: int(time.time() * 1000))


class PartitionReader:
    """Read offset ranges of single partitions with an assigned (group-less) consumer."""

    def __init__(self, bootstrap: str, **client_config: Any) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      enable_auto_commit=False,
                                      fetch_max_bytes=64 << 20,
                                      max_partition_fetch_bytes=16 << 20, **client_config)

    def end(self, topic: str, partition: int) -> int:
        tp = TopicPartition(topic, partition)
        return int(self.consumer.end_offsets([tp])[tp])

    def read(self, topic: str, partition: int, start: int, stop: int,
             timeout_s: float = 30.0) -> list[Any]:
        """Messages with ``start <= offset < stop`` in order."""
        if stop <= start:
            return []
        tp = TopicPartition(topic, partition)
        self.consumer.assign([tp])
        self.consumer.seek(tp, start)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in self.consumer.poll(timeout_ms=500).get(tp, []):
                if start <= msg.offset < stop:
                    out.append(msg)
                if msg.offset >= stop - 1:
                    return out
        raise CheckpointError(f"timed out reading {topic}/{partition} [{start}, {stop})")

    def close(self) -> None:
        self.consumer.close()


class CheckpointStore:
    """Write and load shard checkpoints on the checkpoint topic."""

    def __init__(self, bootstrap: str, topic: str, key: bytes | None = None,
                 **client_config: Any) -> None:
        self.topic = topic
        self.key = key
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                                      max_request_size=CHUNK_BYTES + 64 * 1024,
                                      **client_config)
        self.reader = PartitionReader(bootstrap, **client_config)
        self.bytes_written = 0

    def write(self, ckpt: ShardCheckpoint) -> str:
        """Write ``ckpt`` and wait until the broker acknowledged every chunk."""
        blob = encode_state(ckpt, self.key)
        ckpt_id = uuid.uuid4().hex
        futures = [
            self.producer.send(self.topic, value=value, headers=headers,
                               key=f"{ckpt.shard}:{i}".encode(), partition=ckpt.shard)
            for i, (value, headers) in enumerate(split_chunks(blob, ckpt_id, self.key))
        ]
        self.producer.flush()
        for f in futures:
            f.get(timeout=30)  # raises if any chunk was not acknowledged
        self.bytes_written += len(blob)
        return ckpt_id

    def load(self, shard: int) -> ShardCheckpoint | None:
        """The newest complete, verified checkpoint of ``shard``, or None."""
        end = self.reader.end(self.topic, shard)
        pos = end - 1
        while pos >= 0:
            last = self.reader.read(self.topic, shard, pos, pos + 1)[0]
            info = _chunk_info(last.headers)
            if info is None or info[1] != info[2] - 1:
                pos -= 1  # not the last chunk of a checkpoint: an interrupted write
                continue
            ckpt_id, _, n = info
            msgs = self.reader.read(self.topic, shard, pos - n + 1, pos + 1)
            ids = [(_chunk_info(m.headers) or ("", -1, -1)) for m in msgs]
            if len(msgs) == n and all(c[0] == ckpt_id and c[1] == i for i, c in enumerate(ids)):
                try:
                    blob = join_chunks([m.value for m in msgs], last.headers, self.key)
                except CheckpointError as exc:
                    log.error("checkpoint %s of shard %d refused: %s", ckpt_id, shard, exc)
                    pos -= n
                    continue
                state = decode_state(blob)
                if isinstance(state, ShardCheckpoint) and state.shard == shard:
                    return state
            pos -= 1
        return None

    def close(self) -> None:
        self.producer.close()
        self.reader.close()
