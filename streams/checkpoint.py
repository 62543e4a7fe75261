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
import json
import logging
import pickle
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

log = logging.getLogger("inferwatch")

#: Largest checkpoint message value (bytes): well under Kafka's default 1 MB.
CHUNK_BYTES = 512 * 1024

Headers = list[tuple[str, bytes]]


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or verified."""


#: Arrays at least this large are stored without their all-zero rows (see _StatePickler).
SPARSE_MIN_BYTES = 1 << 16


def _dense(shape: tuple[int, ...], dtype: str, rows: np.ndarray, values: np.ndarray
           ) -> np.ndarray:
    """Rebuild an array pickled by :class:`_StatePickler`: zeros except ``rows``."""
    out = np.zeros(shape, dtype=np.dtype(dtype))
    out[rows] = values
    return out


class _StatePickler(pickle.Pickler):
    """Pickles large numpy arrays without their all-zero rows.

    Detector state is dominated by fixed-size tables (per-client slots, bounded histories)
    that are mostly empty; writing only the used rows makes a checkpoint of a model with
    the default 262,144 client slots cost milliseconds instead of pickling and compressing
    tens of megabytes of zeros. Rows are compared bytewise, so -0.0 and NaN survive.
    """

    def reducer_override(self, obj: Any) -> Any:
        if (type(obj) is not np.ndarray or obj.nbytes < SPARSE_MIN_BYTES or obj.ndim == 0
                or obj.dtype.hasobject or obj.shape[0] == 0):
            return NotImplemented
        flat = np.ascontiguousarray(obj).reshape(obj.shape[0], -1)
        width = flat.shape[1] * flat.itemsize
        word = np.uint64 if width % 8 == 0 else np.uint8  # fewest elements to scan
        words = flat.view(word)
        used = np.flatnonzero(words[:, 0] if words.shape[1] == 1 else words.any(axis=1))
        if used.size * 2 > obj.shape[0]:
            return NotImplemented
        return _dense, (obj.shape, obj.dtype.str, used, obj[used])


class _Parts:
    """A pickler's output as the list of what it wrote, every part a copy.

    Large arrays reach ``write`` as zero-copy buffers of the live arrays (protocol 5);
    each is copied here once, into a numpy buffer, so the parts are a snapshot. Writing
    into one growing ``BytesIO`` instead copied the state two or three times over while
    it reallocated: 192 MB of state (17,000 clients' extraction history) took 0.16-0.62 s
    against 0.07-0.10 s here, and that time is the worker's checkpoint pause. ``spare``
    holds buffers of an earlier snapshot, by size, to copy into (see
    :meth:`CheckpointStore.encode`).
    """

    def __init__(self, spare: dict[int, list[np.ndarray]] | None = None) -> None:
        self.parts: list[Any] = []
        self.spare = spare or {}

    def write(self, data: Any) -> int:
        if isinstance(data, pickle.PickleBuffer):
            src = np.frombuffer(data.raw(), dtype=np.uint8)
            free = self.spare.get(src.nbytes)
            data = free.pop() if free else np.empty(src.nbytes, dtype=np.uint8)
            np.copyto(data, src)
        self.parts.append(data)
        return memoryview(data).nbytes


def pickle_state(state: Any, spare: dict[int, list[np.ndarray]] | None = None) -> list[Any]:
    """Pickle ``state`` with empty table rows left out (the part that must see it frozen),
    as the parts of one pickle: bytes-like objects that, joined, are exactly its bytes.
    Large arrays are copied into ``spare`` buffers of their size when there are some."""
    out = _Parts(spare)
    _StatePickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
    return out.parts


def spare_buffers(parts: list[Any]) -> dict[int, list[np.ndarray]]:
    """The numpy buffers among :func:`pickle_state`'s parts, by size, for the next
    snapshot to copy into (only once these parts are no longer needed)."""
    spare: dict[int, list[np.ndarray]] = {}
    for part in parts:
        if isinstance(part, np.ndarray):
            spare.setdefault(part.nbytes, []).append(part)
    return spare


def compress_state(parts: list[Any]) -> bytes:
    """Compress :func:`pickle_state`'s parts as one zlib stream (zlib releases the GIL,
    so this can run beside the worker)."""
    z = zlib.compressobj(1)
    return b"".join([*(z.compress(part) for part in parts), z.flush()])


def encode_state(state: Any, key: bytes | None) -> bytes:
    """Pickle (empty table rows left out) and compress ``state``."""
    del key  # the digest is computed over the compressed bytes, see split_chunks
    return compress_state(pickle_state(state))


def decode_state(blob: bytes) -> Any:
    """Inverse of :func:`encode_state` (only call on a verified blob)."""
    return pickle.loads(zlib.decompress(blob))  # noqa: S301 - digest verified first


def digest(blob: bytes, key: bytes | None) -> str:
    """SHA-256 of the blob, keyed (HMAC) when a checkpoint key is configured."""
    if key:
        return hmac.new(key, blob, hashlib.sha256).hexdigest()
    return hashlib.sha256(blob).hexdigest()


def split_chunks(blob: bytes, ckpt_id: str, key: bytes | None,
                 chunk_bytes: int = CHUNK_BYTES,
                 position: bytes = b"{}") -> list[tuple[bytes, Headers]]:
    """Cut ``blob`` into messages with the headers :func:`join_chunks` checks.

    ``position`` (JSON: input offsets, incident end, topic ids) is repeated in a header of
    the last chunk, so a worker that cannot unpickle the state (written by another
    inferwatch version) still resumes its input at the right place.
    """
    parts = [blob[i:i + chunk_bytes] for i in range(0, len(blob), chunk_bytes)] or [b""]
    out = []
    for i, part in enumerate(parts):
        headers = [("inferwatch.ckpt", ckpt_id.encode()),
                   ("inferwatch.chunk", f"{i}/{len(parts)}".encode())]
        if i == len(parts) - 1:
            headers.append(("inferwatch.digest", digest(blob, key).encode()))
            headers.append(("inferwatch.position", position))
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
    #: Topic ids of the input topics when the offsets were taken: a different id later
    #: means the topic was recreated and the offsets no longer apply.
    topic_ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EncodedCheckpoint:
    """A checkpoint serialised and ready to write: the shard's state frozen in bytes."""

    shard: int
    pickled: list[Any]  # pickle of the ShardCheckpoint (its parts), compressed when written
    position: bytes  # JSON: offsets, incidents end and topic ids (last chunk's header)


def _position_only(shard: int, headers: Headers) -> ShardCheckpoint:
    """A checkpoint without detector state: where the shard's input resumes."""
    pos = json.loads(dict(headers).get("inferwatch.position", b"{}") or b"{}")
    return ShardCheckpoint(
        shard, None, {(t, p): off for t, p, off in pos.get("offsets", [])},
        int(pos.get("incidents_end", 0)), topic_ids=pos.get("topic_ids", {}))


class PartitionReader:
    """Read offset ranges of single partitions with an assigned (group-less) consumer."""

    def __init__(self, bootstrap: str, **client_config: Any) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      enable_auto_commit=False,
                                      fetch_max_bytes=64 << 20,
                                      max_partition_fetch_bytes=16 << 20, **client_config)

    def topic_id(self, topic: str) -> str | None:
        """The broker's current id of ``topic`` (fresh metadata), or None if unknown."""
        self.consumer.topics()  # forces a metadata request
        tid = self.consumer._client.cluster.topic_id(topic)  # noqa: SLF001 - no public API
        return str(tid) if tid else None

    def end(self, topic: str, partition: int, timeout_s: float = 30.0) -> int:
        """The partition's log end offset, from a fetch response's high watermark.

        Not ListOffsets alone: the embedded broker answers it with the first offset of
        the last record batch plus one, short of the real end whenever that batch holds
        several records (see ``benchmarks/changelog_probe.py``). The listed offset is
        still a safe place to fetch from, and the fetch response carries the true end.
        """
        tp = TopicPartition(topic, partition)
        listed = int(self.consumer.end_offsets([tp])[tp])
        if listed == 0:
            return 0
        self.consumer.assign([tp])
        self.consumer.seek(tp, listed - 1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.consumer.poll(timeout_ms=200, max_records=1)
            hw = self.consumer.highwater(tp)
            if hw is not None:
                return int(hw)
        raise CheckpointError(f"no high watermark for {topic}/{partition} in {timeout_s} s")

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
        self._bootstrap, self._client_config = bootstrap, client_config
        self.producer = self._new_producer()
        self.reader = PartitionReader(bootstrap, **client_config)
        self.bytes_written = 0
        #: Per shard, the buffers its last written checkpoint's arrays were copied into,
        #: by size: the next snapshot copies into them. Fresh memory for a snapshot cost
        #: the kernel 0.3-0.5 s per 190 MB in a busy worker (page faults, huge-page
        #: compaction), all of it inside the processing pause; memory already touched is
        #: a plain copy. The price: one copy of each shard's large arrays stays allocated.
        self.spare: dict[int, dict[int, list[np.ndarray]]] = {}

    def _new_producer(self) -> KafkaProducer:
        # Not idempotent: a broker that lost its state (the memory-only embedded broker
        # after an outage) makes an idempotent producer fail for good; a checkpoint is
        # recognised by its id and digest, so a repeated chunk does no harm.
        return KafkaProducer(bootstrap_servers=self._bootstrap, acks="all", linger_ms=0,
                             enable_idempotence=False,
                             max_request_size=CHUNK_BYTES + 64 * 1024, **self._client_config)

    def encode(self, ckpt: ShardCheckpoint) -> EncodedCheckpoint:
        """Serialise ``ckpt`` now (the state may change right after this returns)."""
        position = json.dumps({
            "offsets": [[t, p, off] for (t, p), off in ckpt.offsets.items()],
            "incidents_end": ckpt.incidents_end, "topic_ids": ckpt.topic_ids,
        }).encode()
        return EncodedCheckpoint(ckpt.shard, pickle_state(ckpt, self.spare.pop(ckpt.shard, None)),
                                 position)

    def keep_spares(self, shards: list[int]) -> None:
        """Free the spare snapshot buffers of shards no longer held."""
        for r in [r for r in self.spare if r not in shards]:
            del self.spare[r]

    def write(self, ckpt: ShardCheckpoint) -> str:
        """Serialise and write ``ckpt``; see :meth:`write_encoded`."""
        return self.write_encoded(self.encode(ckpt))

    def write_encoded(self, enc: EncodedCheckpoint) -> str:
        """Write an encoded checkpoint and wait until the broker acknowledged every chunk.

        Returns the checkpoint's id. On failure the producer is replaced, so the next
        attempt starts clean.
        """
        try:
            return self._write(enc)
        except Exception:
            self.producer.close(timeout=1)
            self.producer = self._new_producer()
            raise

    def _write(self, enc: EncodedCheckpoint) -> str:
        ckpt_id = uuid.uuid4().hex
        blob = compress_state(enc.pickled)
        self.spare[enc.shard] = spare_buffers(enc.pickled)  # an encoding is written once
        futures = [
            self.producer.send(self.topic, value=value, headers=headers,
                               key=f"{enc.shard}:{i}".encode(), partition=enc.shard)
            for i, (value, headers) in enumerate(split_chunks(blob, ckpt_id, self.key,
                                                              position=enc.position))
        ]
        self.producer.flush()
        for f in futures:
            f.get(timeout=30)  # raises if any chunk was not acknowledged
        self.bytes_written += len(blob)
        return ckpt_id

    def load(self, shard: int) -> ShardCheckpoint | None:
        """The newest complete, verified checkpoint of ``shard``, or None."""
        return self.newest(shard)[1]

    def newest(self, shard: int, known_id: str | None = None
               ) -> tuple[str | None, ShardCheckpoint | None]:
        """``(id, checkpoint)`` of the newest complete checkpoint of ``shard``.

        When its id is ``known_id`` (the one this worker wrote last) the state is not read
        again: ``(known_id, None)``. ``(None, None)`` when the shard has no checkpoint.
        """
        end = self.reader.end(self.topic, shard)
        pos = end - 1
        while pos >= 0:
            last = self.reader.read(self.topic, shard, pos, pos + 1)[0]
            info = _chunk_info(last.headers)
            if info is None or info[1] != info[2] - 1:
                pos -= 1  # not the last chunk of a checkpoint: an interrupted write
                continue
            ckpt_id, _, n = info
            if ckpt_id == known_id:
                return ckpt_id, None
            msgs = self.reader.read(self.topic, shard, pos - n + 1, pos + 1)
            ids = [(_chunk_info(m.headers) or ("", -1, -1)) for m in msgs]
            if len(msgs) == n and all(c[0] == ckpt_id and c[1] == i for i, c in enumerate(ids)):
                try:
                    blob = join_chunks([m.value for m in msgs], last.headers, self.key)
                except CheckpointError as exc:
                    log.error("checkpoint %s of shard %d refused: %s", ckpt_id, shard, exc)
                    pos -= n
                    continue
                try:
                    state = decode_state(blob)
                except Exception as exc:  # noqa: BLE001 - e.g. written by another version
                    log.error("checkpoint %s of shard %d cannot be loaded (%s: %s); the shard "
                              "resumes at its checkpointed offsets with fresh detectors",
                              ckpt_id, shard, type(exc).__name__, exc)
                    return ckpt_id, _position_only(shard, last.headers)
                if isinstance(state, ShardCheckpoint) and state.shard == shard:
                    return ckpt_id, state
            pos -= 1
        return None, None

    def close(self) -> None:
        self.producer.close()
        self.reader.close()
