"""The Faust application: consume both input topics, run the pipeline, publish results.

The agent consumes raw bytes (no Faust Records: decoding is done in bulk by
:mod:`schemas.codec`), takes messages in batches of up to ``max_batch`` or
``batch_within_s``, and hands them to :class:`streams.pipeline.Pipeline`. It sends
dead letters and incident records and nothing else; all detection lives in the core.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import faust

from detectors.baseline import Profile
from detectors.block import ModelKey
from streams.bulk import ShardedIngest
from streams.chain import HashChain
from streams.checkpoint import PartitionReader
from streams.metrics import WorkerMetrics
from streams.pipeline import Message, Pipeline, StepOutput
from streams.records import decode_incident
from streams.security import faust_broker_credentials
from streams.settings import Settings

log = logging.getLogger("inferwatch")


def create_app(settings: Settings, profiles: dict[ModelKey, Profile]) -> faust.App:
    """Build the worker's Faust app for ``settings`` (broker must be set)."""
    state_dir = settings.state_dir()
    state_dir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = faust.App(
        settings.app_id,
        broker=settings.broker,
        broker_credentials=faust_broker_credentials(settings),
        store="memory://",
        web_enabled=False,
        datadir=str(state_dir),
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 5, 0.5),
        stream_buffer_maxsize=max(settings.max_batch * 2, 4096),
        broker_max_poll_records=settings.max_batch,
        # one fetch should carry a whole step's worth of messages, not Faust's 1 MiB
        consumer_max_fetch_size=settings.max_fetch_bytes,
    )
    source = app.topic(settings.topic_events, settings.topic_batches,
                       settings.repartition_topic(), key_serializer="raw",
                       value_serializer="raw")
    incidents = app.topic(settings.topic_incidents, key_serializer="raw", value_serializer="raw")
    dlq = app.topic(settings.topic_dlq, key_serializer="raw", value_serializer="raw")
    ocsf = app.topic(settings.topic_incidents_ocsf, key_serializer="raw", value_serializer="raw")
    actions = app.topic(settings.topic_actions, key_serializer="raw", value_serializer="raw")
    forensics = app.topic(settings.topic_forensics, key_serializer="raw",
                          value_serializer="raw")
    metrics = WorkerMetrics()
    pipeline = Pipeline(
        settings.topic_batches,
        settings.detector_config(),
        profiles,
        max_message_bytes=settings.max_message_bytes,
        incident_format=settings.incident_format,
        metrics=metrics,
        client_id_hmac_key=settings.client_id_hmac_key.get_secret_value()
        if settings.client_id_hmac_key else None,
        incident_partitions=settings.topic_partitions,
        repartition_topic=settings.repartition_topic(),
    )
    resume_chains(settings, pipeline.chain)
    sources = {settings.topic_events, settings.topic_batches, settings.repartition_topic()}

    repartition = app.topic(settings.repartition_topic(), key_serializer="raw",
                            value_serializer="raw")

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    async def publish(out: StepOutput) -> None:
        """Send a step's output: everything derived first, the incident records last.

        An incident record on ``ml-incidents`` is what the restart fence recognises as
        published, so the dead letters, forwards, forensics, OCSF findings and actions
        of a step are flushed before its incident records are sent.
        """
        for value, headers in out.dead_letters:
            await dlq.send(value=value, headers=headers)
        for shard, model_id, value, _ in out.forwards:
            await repartition.send(key=model_id.encode(), value=value, partition=shard)
        for snap in out.forensics:
            await forensics.send(key=snap["forensics_id"].encode(), value=dumps(snap))
        for finding in out.ocsf:
            await ocsf.send(key=finding["finding_info"]["uid"].encode(), value=dumps(finding))
        for act in out.actions:
            await actions.send(key=act["action_id"].encode(), value=dumps(act))
        if out.incidents:
            await app.producer.flush()
        for rec, part in zip(out.incidents, out.incident_partitions, strict=True):
            log.info("incident %s %s %s: %s", rec["status"], rec["detector"],
                     rec["incident_id"], rec["summary"])
            await incidents.send(key=rec["incident_id"].encode(), partition=part,
                                 value=pipeline.encode_incident(rec))

    async def flush() -> None:
        await app.producer.flush()

    if settings.ingest == "agent":
        @app.agent(source, name="inferwatch-detect")
        async def detect(stream: Any) -> None:
            async for events in stream.take_events(settings.max_batch,
                                                   within=settings.batch_within_s):
                msgs = [Message(e.message.topic, e.message.partition, e.message.offset,
                                e.message.value) for e in events]
                await publish(pipeline.safe_step(msgs))
    else:
        running: list[ShardedIngest] = []  # created when the worker starts (it connects)

        @app.task
        async def bulk_ingest() -> None:
            running.append(ShardedIngest(settings, pipeline, publish, flush))
            await running[0].run()

        @app.on_before_shutdown.connect
        async def stop_ingest(sender: Any, **_: Any) -> None:
            # Faust sends this before it stops its producer: the ingest loop finishes its
            # step and writes its final checkpoint while the output can still be published.
            for ingest in running:
                await ingest.shutdown()

    @app.timer(interval=30.0)
    async def report() -> None:
        log.info("inferwatch counters: %s", dict(pipeline.counters))

    if settings.ingest == "agent":  # bulk ingest measures its own consumer's lag
        @app.timer(interval=5.0)
        async def measure_lag() -> None:
            consumer = app.consumer
            for tp in consumer.assignment():
                if tp.topic not in sources:
                    continue
                try:
                    high = consumer.highwater(tp)
                except Exception:  # no fetch yet for this partition
                    continue
                done = pipeline.next_offsets.get((tp.topic, tp.partition), 0)
                metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - done, 0))

    @app.task
    async def serve_metrics() -> None:
        if settings.metrics_port:
            metrics.serve(settings.metrics_port, settings.metrics_addr)
            log.info("metrics on http://%s:%d/metrics", settings.metrics_addr,
                     settings.metrics_port)

    app.inferwatch_pipeline = pipeline  # type: ignore[attr-defined]
    return app


def resume_chains(settings: Settings, chain: HashChain) -> None:
    """Continue each partition's hash chain from the last record already on the topic."""
    reader = PartitionReader(settings.bootstrap(), **settings.kafka_client_config())
    try:
        parts = reader.consumer.partitions_for_topic(settings.topic_incidents) or set()
        for p in sorted(parts):
            end = reader.end(settings.topic_incidents, p)
            for msg in reader.read(settings.topic_incidents, p, end - 1, end) if end else []:
                link = decode_incident(msg.value).get("chain")
                if link:
                    chain.resume(p, link["seq"], link["hash"])
    finally:
        reader.close()


def run_worker(settings: Settings, profiles: dict[ModelKey, Profile]) -> None:
    """Run the worker until interrupted (blocks)."""
    app = create_app(settings, profiles)
    worker = faust.Worker(app, loglevel=settings.log_level)
    worker.execute_from_commandline()
