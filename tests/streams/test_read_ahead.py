"""The ingest loop reads on while a fetch is decoded, and puts every read back at a
rebalance: the read under way is rewound with the stale fetch, from its first offsets."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

from aiokafka import TopicPartition

from streams.bulk import ShardedIngest
from streams.pipeline import Message

TOPIC = "inference-batches"


@dataclass
class _Record:
    offset: int
    value: bytes


@dataclass
class _Consumer:
    """Hands out queued reads one ``getmany`` at a time and records seeks."""

    reads: list[dict]
    calls: int = 0
    seeks: dict = field(default_factory=dict)

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        self.calls += 1
        await asyncio.sleep(0)
        return self.reads.pop(0) if self.reads else {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[(tp.topic, tp.partition)] = offset

    def assignment(self) -> set:
        return {TopicPartition(TOPIC, p) for p in (0, 1)}


def _read(partition: int, first: int, n: int) -> dict:
    return {TopicPartition(TOPIC, partition):
            [_Record(o, b"x") for o in range(first, first + n)]}


def _ingest(consumer: _Consumer, next_offsets: dict) -> ShardedIngest:
    ingest = ShardedIngest.__new__(ShardedIngest)  # no broker connection needed
    ingest.consumer = consumer  # type: ignore[assignment]
    ingest.settings = SimpleNamespace(batch_within_s=0.0, max_batch=1000)  # type: ignore
    ingest.pipeline = SimpleNamespace(  # type: ignore[assignment]
        shards={0: None, 1: None}, next_offsets=next_offsets,
        decode=lambda msgs: [m.offset for m in msgs])
    ingest.decode_thread = ThreadPoolExecutor(max_workers=1)
    ingest.generation = 0
    ingest.read_ahead = None
    ingest.counters = Counter()
    return ingest


def _offsets(msgs: list[Message]) -> list[tuple[int, int]]:
    return [(m.partition, m.offset) for m in msgs]


def test_the_next_read_runs_while_a_fetch_is_decoded() -> None:
    consumer = _Consumer([_read(0, 0, 3), _read(0, 3, 2)])
    ingest = _ingest(consumer, {})

    async def scenario() -> None:
        first = await ingest._fetch()
        assert _offsets(first.messages) == [(0, 0), (0, 1), (0, 2)]
        assert first.decoded == [0, 1, 2]
        assert ingest.read_ahead is not None  # started before the decode
        second = await ingest._fetch()
        assert _offsets(second.messages) == [(0, 3), (0, 4)]
        assert consumer.calls == 3  # the second fetch used the read ahead; a third runs
        ingest.read_ahead.cancel()

    asyncio.run(scenario())


def test_a_rebalance_rewinds_the_stale_fetch_and_the_read_ahead() -> None:
    # partition 0 has state (processed up to offset 10); partition 1 is new to the worker
    consumer = _Consumer([{**_read(0, 10, 2), **_read(1, 0, 2)}, _read(1, 2, 3)])
    ingest = _ingest(consumer, {(TOPIC, 0): 10})

    async def scenario() -> None:
        stale = await ingest._fetch()
        ingest.generation += 1  # a rebalance while the fetch was out
        assert stale.generation != ingest.generation
        stale.messages += (await ingest._take_read_ahead())[1]  # as the ingest loop does
        assert ingest.read_ahead is None
        ingest._rewind(stale)

    asyncio.run(scenario())
    # partition 0 back to its state's offset; partition 1 to the stale fetch's first
    # offset, not the read ahead's (that would skip offsets 0 and 1)
    assert consumer.seeks == {(TOPIC, 0): 10, (TOPIC, 1): 0}
    assert ingest.counters["fetches_discarded_by_rebalance"] == 1
