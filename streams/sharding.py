"""Which shard owns a model: the unit of detector state, of checkpoints and of scale-out.

Every per-model and per-client detector of a model must see all of that model's events,
so inferwatch shards its state by ``model_id``: shard ``r`` holds the detectors of the
models that hash to ``r`` and consumes partition ``r`` of each input topic. The hash is
Kafka's default partitioner (murmur2 of the key bytes), so a producer that keys its
messages by ``model_id`` (as :class:`streams.producer.InferenceProducer` does) puts every
event straight on its shard's partition; events that arrive elsewhere are forwarded once
through the repartition topic (see :mod:`streams.pipeline`).

>>> shard_of("fraud-scorer", 1)
0
>>> shard_of("fraud-scorer", 4) == shard_of("fraud-scorer", 4)
True
"""

from __future__ import annotations

from kafka.partitioner import murmur2


def shard_of(model_id: str, shards: int) -> int:
    """The shard (= input partition) of ``model_id`` among ``shards``, as Kafka picks it."""
    if shards <= 1:
        return 0
    return (murmur2(model_id.encode()) & 0x7FFFFFFF) % shards
