"""Bulk ingest: the Faust app's input read in whole fetches, with checkpointed shards.

A Faust agent receives each Kafka message through Faust's stream machinery (a task, a
lock and an ack per message); profiling showed that costing more than inferwatch's whole
decode-and-detect step for single-event messages. This task, run by the Faust app, uses
an aiokafka consumer in a consumer group to fetch up to ``max_batch`` raw messages at a
time and hands them to the pipeline in one step, run on a thread of its own; meanwhile the
event loop fetches the next messages and a decode thread decodes them and computes what
the detectors derive from a block alone (the detection kernels release the GIL), so
decoding no longer waits for detection; and the consumer read after that one is already
under way while they are decoded.

State and delivery (see the README's reliability section):

- The group uses the range assignor over the co-partitioned input topics, so a worker
  that owns partition ``r`` of one input topic owns partition ``r`` of all of them: it
  holds shard ``r`` (the detectors of the models that hash to ``r``).
- Every ``checkpoint_interval_s`` (stretched to ten times the last checkpoint's duration
  when that is longer), after the step's output was flushed to the broker, each held
  shard's engine and input offsets are pickled together (processing pauses only for
  that), then compressed and written to the checkpoint topic in the background; only
  when the broker has acknowledged them are the group offsets committed. On assignment
  (start, restart, rebalance) the shard is restored from its newest checkpoint and its
  input is sought to the offsets in it, so each event is reflected in detector state
  once.
- Records published between the checkpoint and a crash are read back from the incident
  topic into the shard's fence, so replaying the input does not publish them again.
- On shutdown the Faust app calls :meth:`ShardedIngest.shutdown` before it stops its
  producer: the step in hand is finished and checkpointed while its output can still be
  published. A step cut off before its output was published (the task cancelled, a
  publish failed) is finished but not checkpointed: its input is read again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from streams.checkpoint import (
    CheckpointStore,
    EncodedCheckpoint,
    PartitionReader,
    ShardCheckpoint,
)
from streams.pipeline import DecodedRun, Message, Pipeline, StepOutput, content_hash
from streams.records import decode_incident
from streams.settings import Settings

log = logging.getLogger("inferwatch")

Publish = Callable[[StepOutput], Awaitable[None]]

#: Checkpoint interval as a multiple of the last checkpoint's duration, at least: keeps
#: checkpointing to about a tenth of the worker's time.
CHECKPOINT_SHARE = 10.0
#: ...but never more than this (seconds): a checkpoint slowed by a broker that was just
#: reconnecting must not postpone the next one for minutes; it bounds the replay too.
MAX_STRETCHED_INTERVAL_S = 60.0
#: A fetch read while a step runs is decoded once it holds this many bytes (a batch
#: message or a few) or ``max_batch`` messages, or when the step ends.
AHEAD_BYTES = 4 << 20
#: How often that fetch looks for more messages meanwhile (seconds).
AHEAD_POLL_S = 0.002


class ShardedIngest:
    """The consume -> step -> publish -> checkpoint -> commit loop of one worker."""

    def __init__(self, settings: Settings, pipeline: Pipeline, publish: Publish,
                 flush: Callable[[], Awaitable[None]]) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.publish = publish
        self.flush = flush
        self.inputs = [settings.topic_events, settings.topic_batches,
                       settings.repartition_topic()]
        key = settings.checkpoint_key.get_secret_value().encode() \
            if settings.checkpoint_key else None
        client = settings.kafka_client_config()
        self.store = CheckpointStore(settings.bootstrap(), settings.checkpoint_topic(), key,
                                     **client)
        self.reader = PartitionReader(settings.bootstrap(), **client)
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.dirty = False
        self.last_checkpoint = time.monotonic()
        #: Seconds between checkpoints: the setting, stretched when checkpoints are slow.
        self.interval_s = settings.checkpoint_interval_s
        self.counters: Counter = Counter()
        #: Id of the checkpoint this worker wrote last, per shard.
        self.last_written: dict[int, str] = {}
        #: The background half of the last checkpoint (write, then commit), if running.
        self.pending: asyncio.Future[bool] | None = None
        #: Set by :meth:`shutdown`: finish the step in hand, checkpoint, stop.
        self.stopping = asyncio.Event()
        self.stopped = asyncio.Event()
        #: Shards revoked from this worker, kept in memory in case they come back (a
        #: rebalance that returns them, or a broker that lost its data in an outage).
        self.suspended: dict[int, tuple[Any, dict[tuple[str, int], int]]] = {}
        #: Ids of the input topics the held offsets refer to.
        self.topic_ids: dict[str, str] = {}
        #: True from the start of a step until its output is published: a worker stopped
        #: in between does not checkpoint that step (its input is read again).
        self.half_done = False
        #: Where steps run: one thread, one step at a time, awaited under ``lock`` (so
        #: checkpoints and rebalances never see a step half done).
        self.step_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inferwatch-step")
        #: Where the next fetch is decoded while a step runs (see :meth:`_fetch`).
        self.decode_thread = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="inferwatch-decode")
        #: Bumped by every rebalance: a fetch from an earlier generation is put back.
        self.generation = 0
        #: The consumer read that follows the fetch being decoded, started as soon as that
        #: fetch's own reads ended (see :meth:`_fetch`): its generation and messages.
        self.read_ahead: asyncio.Future[tuple[int, list[Message]]] | None = None

    # -- checkpoints ---------------------------------------------------------------------

    def _snapshot(self, shards: list[int]) -> list[EncodedCheckpoint]:
        """Serialise the held shards (runs while no step can change them)."""
        self.store.keep_spares(shards)
        snaps = []
        for r in shards:
            end = self.reader.end(self.settings.topic_incidents, r)
            snaps.append(self.store.encode(ShardCheckpoint(
                r, self.pipeline.shards[r].engine, self.pipeline.shard_offsets(r), end,
                topic_ids=dict(self.topic_ids))))
        return snaps

    def _write(self, snaps: list[EncodedCheckpoint]) -> tuple[list[str], int]:
        """Compress and write the snapshots; their ids and compressed bytes."""
        before = self.store.bytes_written
        ids = [self.store.write_encoded(enc) for enc in snaps]
        return ids, self.store.bytes_written - before

    async def checkpoint(self, wait: bool = False) -> bool:
        """Make every held shard durable, then commit the offsets the checkpoints cover.

        The shards are pickled at once (the only pause in processing); the bytes are
        compressed and written to the checkpoint topic in the background while the worker
        goes on, and the offsets are committed when the broker has acknowledged all of
        them. With
        ``wait`` the call returns after that. Returns False (and commits nothing) when the
        broker did not take the checkpoint, e.g. during an outage; the state stays in
        memory and the next attempt follows after ``checkpoint_interval_s``.
        """
        if not await self.settle():
            self.dirty = True
        started = self.last_checkpoint = time.monotonic()
        shards = sorted(self.pipeline.shards)
        loop = asyncio.get_running_loop()
        try:
            await self.flush()  # records of the steps so far are on the broker first
            # in a thread: the consumer's heartbeats go on meanwhile
            snaps = await loop.run_in_executor(None, self._snapshot, shards)
        except Exception as exc:  # noqa: BLE001 - never crash the worker over a checkpoint
            self._checkpoint_failed(exc)
            return False
        self.dirty = False
        paused = time.monotonic() - started
        offsets = {TopicPartition(t, p): off for r in shards
                   for (t, p), off in self.pipeline.shard_offsets(r).items()}
        self.pending = asyncio.ensure_future(
            self._finish(snaps, offsets, started, paused))
        return await self.settle() if wait else True

    async def _finish(self, snaps: list[EncodedCheckpoint],
                      offsets: dict[TopicPartition, int], started: float,
                      paused: float) -> bool:
        """Write serialised shards, then commit their offsets (the background half)."""
        loop = asyncio.get_running_loop()
        try:
            ids, size = await loop.run_in_executor(None, self._write, snaps)
        except Exception as exc:  # noqa: BLE001 - never crash the worker over a checkpoint
            self._checkpoint_failed(exc)
            self.dirty = True  # the steps since the last good checkpoint are not durable
            return False
        for enc, ckpt_id in zip(snaps, ids, strict=True):
            self.last_written[enc.shard] = ckpt_id
        self.counters["checkpoints"] += len(snaps)
        if offsets and self.consumer is not None:
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:  # noqa: BLE001 - the checkpoint is the source of truth
                log.warning("offset commit after checkpoint failed (%s); the checkpoint "
                            "still holds the position", exc)
        took = time.monotonic() - started
        log.info("checkpoint of shards %s: %d bytes, processing paused %.3f s, written and "
                 "committed after %.3f s", [e.shard for e in snaps],
                 size, paused, took)
        # Checkpoints may take at most a tenth of the worker's time: with large state on a
        # slow broker the interval stretches rather than throughput collapsing.
        self.interval_s = max(self.settings.checkpoint_interval_s,
                              min(CHECKPOINT_SHARE * took, MAX_STRETCHED_INTERVAL_S))
        metrics = self.pipeline.metrics
        if metrics is not None:
            metrics.checkpoints.labels("ok").inc()
            metrics.checkpoint_seconds.observe(took)
            metrics.checkpoint_pause_seconds.observe(paused)
            metrics.checkpoint_bytes.set(size)
        return True

    async def settle(self) -> bool:
        """Wait for the checkpoint being written, if any; False if it failed."""
        pending, self.pending = self.pending, None
        return True if pending is None else await pending

    def _checkpoint_failed(self, exc: Exception) -> None:
        self.counters["checkpoint_failures"] += 1
        if self.pipeline.metrics is not None:
            self.pipeline.metrics.checkpoints.labels("failed").inc()
        log.error("checkpoint failed (%s: %s); offsets not committed, will retry",
                  type(exc).__name__, exc)

    def observe_lag(self) -> None:
        """Consumer lag per input partition (fetch high watermark minus next offset)."""
        metrics, consumer = self.pipeline.metrics, self.consumer
        if metrics is None or consumer is None:
            return
        metrics.shards.set(len(self.pipeline.shards))
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            done = self.pipeline.next_offsets.get((tp.topic, tp.partition), 0)
            metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - done, 0))

    def _restore(self, r: int) -> tuple[dict[TopicPartition, int], dict[str, str]]:
        """Load shard ``r`` from its newest checkpoint; return where its input resumes.

        A shard this worker still has in memory is kept when nothing newer than its own
        last checkpoint is on the topic (it came back after a rebalance, or the broker
        lost the checkpoint topic in an outage).
        """
        mine = self.last_written.get(r)
        ckpt_id, ckpt = self.store.newest(r, known_id=mine if r in self.suspended else None)
        if r in self.suspended and (ckpt_id is None or ckpt_id == mine):
            shard, offsets = self.suspended.pop(r)
            self.pipeline.adopt_shard(r, shard, offsets)
            log.info("shard %d continues from memory", r)
            self.counters["resumed_from_memory"] += 1
            return {TopicPartition(t, p): off for (t, p), off in offsets.items()}, \
                dict(self.topic_ids)
        self.suspended.pop(r, None)
        inc_topic = self.settings.topic_incidents
        end = self.reader.end(inc_topic, r)
        start = ckpt.incidents_end if ckpt else end
        tail = self.reader.read(inc_topic, r, start, end)
        fence: Counter = Counter()
        for msg in tail:
            try:
                fence[content_hash(decode_incident(msg.value))] += 1
            except Exception:  # noqa: BLE001 - a foreign record on the topic is not ours
                continue
        last = tail[-1:] or (self.reader.read(inc_topic, r, end - 1, end) if end else [])
        if last:
            try:
                link = decode_incident(last[0].value).get("chain")
            except Exception:  # noqa: BLE001
                link = None
            if link:
                self.pipeline.chain.resume(r, link["seq"], link["hash"])
        offsets = ckpt.offsets if ckpt else {}
        self.pipeline.restore_shard(r, ckpt.engine if ckpt else None, offsets, fence)
        log.info("shard %d %s; %d record(s) already published after it", r,
                 f"restored from checkpoint of {ckpt.written_ms}" if ckpt else "starts empty",
                 len(tail))
        self.counters["restores"] += 1
        return ({TopicPartition(t, p): off for (t, p), off in offsets.items()},
                ckpt.topic_ids if ckpt else {})

    # -- rebalance -----------------------------------------------------------------------

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.lock:
            self.generation += 1
            gone = {tp.partition for tp in revoked} & set(self.pipeline.shards)
            if not gone:
                return
            await self.checkpoint(wait=True)  # durable before another worker reads it
            for r in gone:
                self.suspended[r] = (self.pipeline.shards[r], self.pipeline.shard_offsets(r))
                self.pipeline.drop_shard(r)
            log.info("shards %s handed over", sorted(gone))

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self.lock:
            self.generation += 1
            current = {t: self.reader.topic_id(t) for t in {tp.topic for tp in assigned}}
            for r in sorted({tp.partition for tp in assigned}):
                if r in self.pipeline.shards:  # kept through the rebalance: resume exactly
                    positions = {TopicPartition(t, p): off for (t, p), off
                                 in self.pipeline.shard_offsets(r).items()}
                    ids = dict(self.topic_ids)
                else:
                    positions, ids = self._restore(r)
                assert self.consumer is not None
                for tp in assigned:
                    if tp.partition != r or tp not in positions:
                        continue
                    end = self.reader.end(tp.topic, tp.partition)
                    was, now = ids.get(tp.topic), current.get(tp.topic)
                    if positions[tp] > end or (was and now and was != now):
                        # the offsets belong to an earlier incarnation of the topic (it was
                        # recreated, or the broker lost its data): read the new one whole
                        log.warning("%s/%d is not the log the state has read (id %s -> %s, "
                                    "end %d, position %d): reading it from the start",
                                    tp.topic, tp.partition, was, now, end, positions[tp])
                        self.counters["input_logs_replaced"] += 1
                        self.pipeline.next_offsets[(tp.topic, tp.partition)] = 0
                        await self.consumer.seek_to_beginning(tp)
                    else:
                        self.consumer.seek(tp, positions[tp])
            self.topic_ids.update({t: i for t, i in current.items() if i})
            log.info("holding shards %s", sorted(self.pipeline.shards))

    # -- main loop -----------------------------------------------------------------------

    async def run(self) -> None:
        s = self.settings
        consumer = self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap(),
            group_id=f"{s.app_id}-ingest",
            client_id=f"{s.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=s.max_fetch_bytes,
            fetch_max_bytes=s.max_fetch_bytes,
            fetch_max_wait_ms=int(s.batch_within_s * 1000),
            session_timeout_ms=int(s.session_timeout_s * 1000),
            rebalance_timeout_ms=int(s.rebalance_timeout_s * 1000),
            heartbeat_interval_ms=int(max(s.session_timeout_s / 5, 0.5) * 1000),
            partition_assignment_strategy=(RangePartitionAssignor,),
            **s.aiokafka_client_config(),
        )
        consumer.subscribe(self.inputs, listener=_Listener(self))
        await consumer.start()
        log.info("bulk ingest consuming %s", ", ".join(self.inputs))
        ahead: asyncio.Future[_Fetched] | None = None
        try:
            while not self.stopping.is_set():
                fetched = await ahead if ahead is not None else await self._fetch()
                ahead = None
                if fetched.generation != self.generation and self.read_ahead is not None:
                    fetched.messages += (await self._take_read_ahead())[1]  # see _rewind
                async with self.lock:
                    if fetched.generation != self.generation and self.read_ahead is not None:
                        # the rebalance came after the check above: its read joins first
                        ahead = asyncio.get_running_loop().create_future()
                        ahead.set_result(fetched)
                        continue
                    if fetched.generation != self.generation:
                        self._rewind(fetched)  # fetched before a rebalance: read it again
                    elif fetched.messages:
                        self.half_done = True  # until the step's output is all published
                        step = self._step(fetched.messages, fetched.decoded)
                        # the next fetch is read and decoded while this step's detectors run
                        # and its output is published
                        busy = asyncio.get_running_loop().create_future()
                        ahead = asyncio.ensure_future(self._fetch(busy=busy))
                        try:
                            await self.publish(await step)
                        finally:
                            busy.set_result(None)
                        self.half_done = False
                        self.dirty = True
                    self.observe_lag()
                    writing = self.pending is not None and not self.pending.done()
                    if self.dirty and not writing and (
                            time.monotonic() - self.last_checkpoint >= self.interval_s):
                        await self.checkpoint()
        except asyncio.CancelledError:
            raise
        finally:
            for pending in (ahead, self.read_ahead):  # fetched, not processed: not in any
                if pending is not None:  # checkpoint either
                    pending.cancel()
                    await asyncio.wait([pending])
            try:
                async with self.lock:
                    if self.dirty and not self.half_done:
                        await self.checkpoint(wait=True)
                    else:  # a step cut off before its output was out is not checkpointed:
                        await self.settle()  # its input is read again from the last one
            finally:
                self.stopped.set()
                self.step_thread.shutdown(wait=False)
                self.decode_thread.shutdown(wait=False)
                await consumer.stop()
                self.store.close()
                self.reader.close()

    async def _fetch(self, busy: asyncio.Future | None = None) -> _Fetched:
        """The next messages of the held shards, decoded on the decode thread.

        Runs while a step runs and is published, until ``busy`` is done (:meth:`run`):
        decoding only uses the pipeline's decoder, which nothing else uses meanwhile, and
        only reads the engines (:meth:`~streams.pipeline.Pipeline.decode`). A decoding
        error is left for the step, whose last line of defence dead-letters the messages.
        Its first read is the one started at the end of the previous fetch
        (:attr:`read_ahead`), and it starts the next before decoding: a read mostly waits
        for the broker, which then overlaps the decode.
        """
        assert self.consumer is not None
        s = self.settings
        generation, msgs = await (self._take_read_ahead() if self.read_ahead is not None
                                  else self._read())
        # Small messages (single events) arrive a fetch response at a time: while the step
        # runs and is published, gather up to a step's worth, as a fetch after it would.
        size = sum(len(m.value or b"") for m in msgs)
        while busy is not None and not busy.done() and len(msgs) < s.max_batch \
                and size < AHEAD_BYTES:
            await asyncio.wait([busy], timeout=AHEAD_POLL_S)
            more = self._held(await self.consumer.getmany(
                timeout_ms=0, max_records=s.max_batch - len(msgs)))
            msgs += more
            size += sum(len(m.value or b"") for m in more)
        # The next read goes on while this fetch is decoded: by the time the step after
        # this one starts, its messages are usually in hand (a read waits for the broker).
        self.read_ahead = asyncio.ensure_future(self._read())
        decoded = None
        if msgs:
            try:
                decoded = await asyncio.get_running_loop().run_in_executor(
                    self.decode_thread, self.pipeline.decode, msgs)
            except Exception:  # noqa: BLE001 - the step decodes again and dead-letters
                decoded = None
        return _Fetched(generation, msgs, decoded)

    async def _read(self) -> tuple[int, list[Message]]:
        """One consumer read of the held shards' messages, with the rebalance generation
        it started in (a rebalance during the read makes them stale)."""
        generation = self.generation
        assert self.consumer is not None
        s = self.settings
        return generation, self._held(await self.consumer.getmany(
            timeout_ms=int(s.batch_within_s * 1000), max_records=s.max_batch))

    async def _take_read_ahead(self) -> tuple[int, list[Message]]:
        """The read under way (:attr:`read_ahead`), awaited: its generation and messages."""
        assert self.read_ahead is not None
        pending, self.read_ahead = self.read_ahead, None
        return await pending

    def _held(self, fetched: dict[TopicPartition, list[Any]]) -> list[Message]:
        """The fetched records of the shards this worker holds, as pipeline messages."""
        return [Message(tp.topic, tp.partition, m.offset, m.value)
                for tp, records in fetched.items()
                if tp.partition in self.pipeline.shards for m in records]

    def _rewind(self, stale: _Fetched) -> None:
        """Put back messages fetched across a rebalance (they were not processed).

        A fetch is never awaited under :attr:`lock` (aiokafka's ``getmany`` waits while
        partitions are being reassigned, and the rebalance callbacks take the lock), so a
        rebalance can run while one is under way. It sought every partition it restored
        or kept to the offset its state has reached; a partition it did not seek
        continues after these messages, so it is sought back to the first of them. The
        read that was under way after the stale fetch (:attr:`read_ahead`) was awaited
        and its messages added to ``stale`` before: whatever generation it started in,
        it read on from positions this rewind moves, so it is read again too.
        """
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        first: dict[tuple[str, int], int] = {}
        for m in stale.messages:
            first.setdefault((m.topic, m.partition), m.offset)
        for (topic, part), offset in first.items():
            tp = TopicPartition(topic, part)
            if tp in assigned and part in self.pipeline.shards:
                self.consumer.seek(tp, self.pipeline.next_offsets.get((topic, part), offset))
        self.counters["fetches_discarded_by_rebalance"] += 1

    async def _step(self, msgs: list[Message],
                    decoded: list[DecodedRun] | None = None) -> StepOutput:
        """Run one pipeline step on the step thread, so the event loop keeps fetching the
        next messages (and heartbeating) while the kernels run without the GIL.

        If this task is cancelled meanwhile, the step still finishes before the error goes
        on: nothing may read or checkpoint the pipeline while the thread changes it.
        """
        fut = asyncio.get_running_loop().run_in_executor(
            self.step_thread, self.pipeline.safe_step, msgs, decoded)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            await asyncio.wait([fut])
            raise

    async def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop after the step in hand and its final checkpoint (called while the app's
        producer still runs, so no step is cut off half-published at shutdown)."""
        self.stopping.set()
        try:
            await asyncio.wait_for(self.stopped.wait(), timeout_s)
        except TimeoutError:
            log.warning("bulk ingest did not stop within %.0f s", timeout_s)


@dataclass(slots=True)
class _Fetched:
    """One fetch: the rebalance generation it was read in, its messages, their decoding
    (None: the step decodes them)."""

    generation: int
    messages: list[Message]
    decoded: list[DecodedRun] | None


class _Listener(ConsumerRebalanceListener):
    def __init__(self, ingest: ShardedIngest) -> None:
        self.ingest = ingest

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.ingest.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.ingest.on_assigned(list(assigned))

