"""One step of the worker, without Faust: raw messages in, records to publish out.

The Faust agent (:mod:`streams.app`) only gathers messages and sends what this returns;
benchmarks and tests drive the same code directly.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from detectors.baseline import Profile
from detectors.block import EventBlock, ModelKey, coalesce
from detectors.config import DetectorConfig
from detectors.engine import DetectionEngine
from schemas.codec import Decoder, DecodeResult, ModelShape, Reject
from schemas.encoders import batch_avro
from streams.actions import recommend
from streams.atlas import techniques_for
from streams.chain import HashChain, record_hash
from streams.metrics import WorkerMetrics
from streams.ocsf import to_detection_finding
from streams.privacy import Pseudonymizer
from streams.records import dead_letter, incident_avro, incident_json
from streams.sharding import shard_of

PRODUCT_VERSION = "0.1.0"
#: Largest block the detectors are given: the batches of one fetch are joined up to this
#: many events per model (:func:`detectors.block.coalesce`).
MERGE_EVENTS = 32_768


def enrich(record: dict[str, Any]) -> dict[str, Any]:
    """Add what the SIEM side needs to a core incident record (ATLAS technique ids).

    The forensic snapshot the core attaches to opening records is removed (the worker
    publishes it on its own topic; see :meth:`Pipeline._publishable`).
    """
    record.pop("_forensics", None)
    record["atlas_techniques"] = [t["technique_id"] for t in techniques_for(record)]
    return record


@dataclass(slots=True)
class Message:
    """A consumed Kafka message: where it came from and its value."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(slots=True)
class DecodedRun:
    """Messages of one topic partition, in order, what the codec made of them, and where
    its blocks go: ``local`` (coalesced, for this worker's detectors) and ``forwards``
    (blocks of another shard, for the repartition topic, as they came)."""

    messages: list[Message]
    result: DecodeResult
    local: list[tuple[int, EventBlock]]  # (shard, block)
    forwards: list[tuple[int, EventBlock]]


@dataclass
class StepOutput:
    """What one step publishes: incident records and their OCSF and action derivatives."""

    incidents: list[dict[str, Any]] = field(default_factory=list)
    incident_partitions: list[int] = field(default_factory=list)
    forensics: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[tuple[bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    ocsf: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    #: Blocks that belong to another shard: (shard, model_id, InferenceBatch bytes, events)
    #: for the repartition topic.
    forwards: list[tuple[int, str, bytes, int]] = field(default_factory=list)
    #: Records not published again because they are already on the incident topic.
    suppressed: int = 0


def content_hash(record: dict[str, Any]) -> str:
    """Identity of a published incident record's content (its chain link excluded)."""
    return record_hash("", record)


@dataclass
class Shard:
    """The detection state of one shard: its engine and its republishing fence.

    ``fence`` holds the content hashes of records already on the shard's incident
    partition that were produced after the engine's checkpoint: replaying the input
    from the checkpoint regenerates them, and they are not published twice.
    """

    engine: DetectionEngine
    fence: Counter = field(default_factory=Counter)


class Pipeline:
    """Decode, validate, detect, and encode: everything between consume and produce."""

    def __init__(
        self,
        batches_topic: str,
        cfg: DetectorConfig | None = None,
        profiles: dict[ModelKey, Profile] | None = None,
        max_message_bytes: int = 1_000_000,
        incident_format: str = "json",
        metrics: WorkerMetrics | None = None,
        client_id_hmac_key: str | None = None,
        incident_partitions: int = 1,
        repartition_topic: str | None = None,
    ) -> None:
        profiles = profiles or {}
        self.cfg = cfg or DetectorConfig()
        self.profiles = profiles
        #: Shards this pipeline holds, by number (= input partition = incident partition).
        self.shards: dict[int, Shard] = {}
        self.repartition_topic = repartition_topic
        self._retired_kernel_seconds: Counter = Counter()
        self.decoder = Decoder(
            {k: ModelShape(p.n_features, p.n_classes) for k, p in profiles.items()},
            max_message_bytes=max_message_bytes,
        )
        self.batches_topic = batches_topic
        self.encode_incident = incident_avro if incident_format == "avro" else incident_json
        self.counters: Counter = Counter()
        self.metrics = metrics
        self.pseudonymizer = Pseudonymizer(client_id_hmac_key.encode()) \
            if client_id_hmac_key else None
        self.chain = HashChain()
        #: Number of shards: input, repartition and incident topics all have this many
        #: partitions (co-partitioned), and a model's shard is :func:`shard_of` its id.
        self.incident_partitions = max(incident_partitions, 1)
        #: Next offset to process per (topic, partition): for lag and for checkpoints.
        self.next_offsets: dict[tuple[str, int], int] = {}

    @property
    def engine(self) -> DetectionEngine:
        """The engine of a single-shard pipeline (tests, replay-like use)."""
        if self.incident_partitions != 1:
            raise ValueError("a sharded pipeline has one engine per shard: use shard(r)")
        return self.shard(0).engine

    def shard(self, r: int) -> Shard:
        """Shard ``r``, created empty on first use."""
        sh = self.shards.get(r)
        if sh is None:
            sh = self.shards[r] = Shard(DetectionEngine(self.cfg, self.profiles))
        return sh

    def restore_shard(self, r: int, engine: DetectionEngine | None,
                      offsets: dict[tuple[str, int], int], fence: Counter) -> None:
        """Install shard ``r`` from a checkpoint (or empty) with its republishing fence."""
        self.drop_shard(r)
        self.shards[r] = Shard(engine or DetectionEngine(self.cfg, self.profiles), fence)
        for tp, off in offsets.items():
            self.next_offsets[tp] = off

    def adopt_shard(self, r: int, shard: Shard, offsets: dict[tuple[str, int], int]) -> None:
        """Take back shard ``r`` that :meth:`drop_shard` let go of, state and all.

        Its kernel time moved to the retired total when it was dropped; it moves back
        so that :meth:`kernel_seconds` counts it once.
        """
        self._retired_kernel_seconds.subtract(shard.engine.kernel_seconds)
        self.shards[r] = shard
        self.next_offsets.update(offsets)

    def drop_shard(self, r: int) -> None:
        """Forget shard ``r`` (its partitions went to another worker)."""
        sh = self.shards.pop(r, None)
        if sh is not None:
            self._retired_kernel_seconds.update(sh.engine.kernel_seconds)
        for tp in [tp for tp in self.next_offsets if tp[1] == r]:
            del self.next_offsets[tp]

    def shard_offsets(self, r: int) -> dict[tuple[str, int], int]:
        """Next input offsets of shard ``r``'s partitions (what its checkpoint records)."""
        return {tp: off for tp, off in self.next_offsets.items() if tp[1] == r}

    def kernel_seconds(self) -> Counter:
        total = Counter(self._retired_kernel_seconds)
        for sh in self.shards.values():
            total.update(sh.engine.kernel_seconds)
        return total

    def stats(self) -> dict[str, Any]:
        """Engine counters summed over the shards held."""
        engines = [sh.engine.stats() for sh in self.shards.values()]
        return {
            "evictions": {k[len("evictions_"):]: v for k, v in self.counters.items()
                          if k.startswith("evictions_")},
            "shards": sorted(self.shards),
            "events": sum(e["events"] for e in engines),
            "models": sum(e["models"] for e in engines),
            "open_incidents": sum(e["open_incidents"] for e in engines),
        }

    def safe_step(self, messages: list[Message],
                  decoded: list[DecodedRun] | None = None) -> StepOutput:
        """:meth:`step`, but an unexpected error dead-letters the messages, never loses them.

        Every input is supposed to be accepted or rejected by the codec; this is the last
        line of defence so a bug cannot crash the worker or drop a batch silently.
        """
        try:
            return self.step(messages, decoded)
        except Exception as exc:  # noqa: BLE001 - deliberately broad: see docstring
            self.counters["internal_errors"] += 1
            out = StepOutput()
            reason = f"internal error while processing: {type(exc).__name__}: {exc}"[:500]
            for m in messages:
                r = Reject(0, "internal_error", reason)
                out.rejects.append(r)
                out.dead_letters.append(dead_letter(m.value, m.topic, m.partition, m.offset, r))
            self.counters["dead_letters"] += len(messages)
            return out

    def decode(self, messages: list[Message]) -> list[DecodedRun]:
        """Decode and validate ``messages`` for :meth:`step`, without touching detector state.

        The bulk ingest loop calls this on a thread of its own for the next fetch while
        the current step's detectors run, so decoding no longer waits for detection (only
        the decoder is used, and only by that thread). Messages are cut into runs of one
        topic partition each, in order; each run's blocks are routed to their shard,
        joined (:func:`detectors.block.coalesce`), and what the detectors derive from a
        block alone is computed here too (:meth:`DetectionEngine.prepare`, which only
        reads the engines).
        """
        runs: list[DecodedRun] = []
        by_partition: dict[int, list[Message]] = {}
        for m in messages:
            by_partition.setdefault(m.partition, []).append(m)
        for part_msgs in by_partition.values():
            run: list[Message] = []
            for m in part_msgs:
                if run and m.topic != run[0].topic:
                    runs.append(self._decode_run(run))
                    run = []
                run.append(m)
            if run:
                runs.append(self._decode_run(run))
        return runs

    def _decode_run(self, run: list[Message]) -> DecodedRun:
        values = [m.value for m in run]
        batch = run[0].topic in (self.batches_topic, self.repartition_topic)
        result = self.decoder.decode_batches(values) if batch \
            else self.decoder.decode_events(values)
        forwarded = run[0].topic == self.repartition_topic
        here = run[0].partition
        mine, forwards = [], []
        for block in result.blocks:
            r = shard_of(block.model_id, self.incident_partitions)
            if r != here and not forwarded:  # forwarded as they came: one message each
                forwards.append((r, block))
            else:
                mine.append(block)
        local = [(shard_of(b.model_id, self.incident_partitions), b)
                 for b in coalesce(mine, MERGE_EVENTS)]
        for r, block in local:
            shard = self.shards.get(r)
            if shard is not None:
                shard.engine.prepare(block)
        return DecodedRun(run, result, local, forwards)

    def step(self, messages: list[Message],
             decoded: list[DecodedRun] | None = None) -> StepOutput:
        """Process messages in order (single-event and batch messages may be mixed).

        ``decoded`` is :meth:`decode` of the same messages when the caller decoded them
        ahead; without it they are decoded here.
        """
        t0 = time.perf_counter()
        out = StepOutput()
        events_before = self.counters["events_in"]
        for dr in self.decode(messages) if decoded is None else decoded:
            self._run(dr, out)
        for m in messages:  # in offset order per partition; the last one wins
            self.next_offsets[(m.topic, m.partition)] = m.offset + 1
        if self.metrics is not None:
            self.metrics.forwarded.inc(sum(n for *_, n in out.forwards))
            self.metrics.not_republished.inc(out.suppressed)
            self.metrics.observe_step(
                Counter(m.topic for m in messages),
                self.counters["events_in"] - events_before,
                out.rejects,
                out.incidents, time.perf_counter() - t0, self.stats(),
                self.kernel_seconds(),
            )
        return out

    def _publishable(self, rec: dict[str, Any], out: StepOutput, part: int) -> None:
        """Turn one core record into everything published for it, in publishing form.

        A record whose content is in the shard's fence is already on the topic (it was
        published before a crash, after the checkpoint being replayed): it is skipped with
        everything derived from it, and does not advance the hash chain.
        """
        snapshot = rec.pop("_forensics", None)
        rec = enrich(rec)
        if self.pseudonymizer is not None:
            rec = self.pseudonymizer.apply(rec)
            snapshot = self.pseudonymizer.apply(snapshot) if snapshot else None
        fence = self.shards[part].fence
        if fence:
            h = content_hash(rec)
            if fence[h] > 0:
                fence[h] -= 1
                if fence[h] == 0:
                    del fence[h]
                out.suppressed += 1
                self.counters["incidents_not_republished"] += 1
                return
        self.chain.link(rec, part)
        out.incidents.append(rec)
        out.incident_partitions.append(part)
        if snapshot:
            out.forensics.append(snapshot)
        out.ocsf.append(to_detection_finding(rec, PRODUCT_VERSION))
        out.actions.extend(recommend(rec))

    def _run(self, decoded: DecodedRun, out: StepOutput) -> None:
        """Detect (or forward) a decoded run of messages from one topic partition."""
        run, result = decoded.messages, decoded.result
        self.counters["messages_in"] += len(run)
        out.rejects.extend(result.rejects)
        for r in result.rejects:
            m = run[r.index]
            out.dead_letters.append(dead_letter(m.value, m.topic, m.partition, m.offset, r))
            self.counters["events_rejected"] += r.rows
            self.counters[f"rejected_{r.code}"] += 1
        self.counters["dead_letters"] += len(result.rejects)
        for r, block in decoded.forwards:
            out.forwards.append((r, block.model_id, _as_batch(block), len(block)))
            self.counters["events_forwarded"] += len(block)
        for r, block in decoded.local:
            self.counters["events_in"] += len(block)
            engine = self.shard(r).engine
            evicted = engine.evictions()
            for rec in engine.process(block):
                self._publishable(rec, out, r)
                self.counters[f"incidents_{rec['detector']}"] += 1
            for name, n in (engine.evictions() - evicted).items():
                self.counters[f"evictions_{name}"] += n
        self.counters["incidents"] = sum(
            v for k, v in self.counters.items() if k.startswith("incidents_")
        )


def _as_batch(block: Any) -> bytes:
    """A decoded block as an InferenceBatch message for the repartition topic."""
    return batch_avro(block.model_id, block.model_version, block.event_id, block.ts,
                      block.client_id, block.prediction, block.X,
                      block.scores if block.scores.shape[1] else None, block.confidence)
