"""Create inferwatch's topics up front (kafka-python admin), so every worker agrees."""

from __future__ import annotations

import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError


def ensure_topics(bootstrap: str, topics: list[str], partitions: int = 1,
                  timeout_s: float = 30.0, **client_kw: object) -> None:
    """Create missing topics; retry while the broker is still starting."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="inferwatch-admin",
                                     **client_kw)
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t, partitions, 1) for t in missing])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def partition_counts(bootstrap: str, topics: list[str], **client_kw: object) -> dict[str, int]:
    """Number of partitions of each existing topic in ``topics``."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, **client_kw)
    try:
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
    finally:
        consumer.close()


def check_copartitioned(counts: dict[str, int]) -> int:
    """The shard count if every sharded topic has the same partition count, else raise.

    inferwatch keeps a model's detector state on the shard that consumes partition ``r``
    of every input topic and writes partition ``r`` of the incident topic, so these
    topics must be co-partitioned (as in Kafka Streams joins).
    """
    distinct = set(counts.values())
    if len(distinct) != 1 or 0 in distinct:
        listing = ", ".join(f"{t}={n}" for t, n in counts.items())
        raise ValueError(
            f"inferwatch's sharded topics must all have the same number of partitions "
            f"(found {listing}); create them with INFERWATCH_TOPIC_PARTITIONS partitions "
            f"or add partitions so they match")
    return distinct.pop()
