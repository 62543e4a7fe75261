"""The checkpoint topic through the real broker: chunking, torn writes, keys, old versions."""

from __future__ import annotations

import pickle
import uuid
import zlib

import numpy as np
from kafka import KafkaProducer

from streams.broker import EmbeddedBroker
from streams.checkpoint import (
    CHUNK_BYTES,
    CheckpointStore,
    PartitionReader,
    ShardCheckpoint,
    split_chunks,
)
from streams.topics import ensure_topics


def _topic(broker: EmbeddedBroker) -> str:
    topic = f"ckpt-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, [topic], partitions=2)
    return topic


def _ckpt(shard: int, n: int, size: int = 0) -> ShardCheckpoint:
    # random bytes do not compress: ``size`` bytes of state become several chunks
    engine = {"events": n, "blob": np.random.default_rng(n).bytes(size)}
    return ShardCheckpoint(shard, engine, {("events", shard): n}, incidents_end=n,
                           topic_ids={"events": "id-1"})


def test_newest_complete_checkpoint_wins_even_after_a_torn_write(
        broker: EmbeddedBroker) -> None:
    topic = _topic(broker)
    store = CheckpointStore(broker.bootstrap, topic)
    try:
        store.write(_ckpt(1, 10))
        store.write(_ckpt(1, 20, size=3 * CHUNK_BYTES))  # four chunks
        assert store.load(1).offsets == {("events", 1): 20}
        assert store.load(1).engine["blob"] == _ckpt(1, 20, 3 * CHUNK_BYTES).engine["blob"]
        assert store.load(0) is None  # shards are independent partitions

        # a writer that crashed after two of three chunks: the previous one is loaded
        blob = zlib.compress(pickle.dumps(_ckpt(1, 30, size=2 * CHUNK_BYTES)), 1)
        chunks = split_chunks(blob, "torn", key=None)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap,
                                 max_request_size=2 * CHUNK_BYTES)
        for value, headers in chunks[:2]:
            producer.send(topic, value=value, headers=headers, partition=1)
        producer.flush()
        producer.close()
        assert store.load(1).offsets == {("events", 1): 20}
    finally:
        store.close()


def test_signed_checkpoints_refuse_unsigned_ones(broker: EmbeddedBroker) -> None:
    topic = _topic(broker)
    plain = CheckpointStore(broker.bootstrap, topic)
    signed = CheckpointStore(broker.bootstrap, topic, key=b"worker-key")
    try:
        signed.write(_ckpt(0, 5))
        plain.write(_ckpt(0, 6))  # e.g. forged by someone without the key
        assert signed.load(0).offsets == {("events", 0): 5}
    finally:
        plain.close()
        signed.close()


def test_state_from_another_version_still_gives_the_position(broker: EmbeddedBroker) -> None:
    topic = _topic(broker)
    store = CheckpointStore(broker.bootstrap, topic)
    try:
        ckpt_id = store.write(_ckpt(0, 7))
        # the newest state cannot be unpickled by this version (corrupt pickle, valid digest)
        blob = zlib.compress(b"\x80\x05not a pickle", 1)
        chunks = split_chunks(blob, "future", key=None,
                              position=b'{"offsets": [["events", 0, 9]], "incidents_end": 3,'
                                       b' "topic_ids": {"events": "id-2"}}')
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for value, headers in chunks:
            producer.send(topic, value=value, headers=headers, partition=0)
        producer.flush()
        producer.close()
        got_id, got = store.newest(0)
        assert got_id == "future" != ckpt_id
        assert got.engine is None  # fresh detectors ...
        assert got.offsets == {("events", 0): 9} and got.incidents_end == 3  # ... same place
    finally:
        store.close()


def test_log_end_is_the_high_watermark_not_list_offsets(broker: EmbeddedBroker) -> None:
    """The embedded broker's ListOffsets stops at its last batch; the reader must not."""
    topic = _topic(broker)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50,
                             batch_size=1 << 20)
    for i in range(500):  # lingering producer: a few large batches
        producer.send(topic, value=str(i).encode(), partition=0)
    producer.flush()
    producer.close()
    reader = PartitionReader(broker.bootstrap)
    try:
        assert reader.end(topic, 0) == 500
        last = reader.read(topic, 0, 499, 500)
        assert [m.value for m in last] == [b"499"]
    finally:
        reader.close()
