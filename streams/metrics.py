"""Prometheus metrics of the worker: what an operator watches while sizing and tuning.

Exposed on ``http://<host>:INFERWATCH_METRICS_PORT/metrics`` (0 disables it). Names:

- ``inferwatch_messages_in_total{topic}`` and ``inferwatch_events_in_total`` (valid events)
- ``inferwatch_dead_letters_total{error_code}`` and ``inferwatch_events_rejected_total``
- ``inferwatch_incident_records_total{detector,status}``
- ``inferwatch_batch_messages`` (histogram of messages per processing step)
- ``inferwatch_kernel_seconds_total{detector}`` (time in each detector)
- ``inferwatch_step_seconds`` (histogram of whole-step processing time)
- ``inferwatch_consumer_lag{topic,partition}`` (high watermark minus next offset to process)
- ``inferwatch_models`` and ``inferwatch_open_incidents``
- ``inferwatch_client_evictions_total{detector}`` (clients evicted from the per-client
  tables: a steady rate while clients are still active means a table is too small)
- ``inferwatch_shards_held``, ``inferwatch_checkpoints_total{result}``,
  ``inferwatch_checkpoint_seconds``, ``inferwatch_checkpoint_pause_seconds`` and
  ``inferwatch_checkpoint_bytes`` (durable state)
- ``inferwatch_events_forwarded_total`` (events sent on to their model's shard) and
  ``inferwatch_incidents_not_republished_total`` (records skipped after a restart because
  they were already published)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client import Counter as PromCounter


class WorkerMetrics:
    """The worker's metric families, in their own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages_in = PromCounter("inferwatch_messages_in", "Messages consumed",
                                       ["topic"], registry=r)
        self.events_in = PromCounter("inferwatch_events_in", "Valid events processed",
                                     registry=r)
        self.dead_letters = PromCounter("inferwatch_dead_letters", "Messages dead-lettered",
                                        ["error_code"], registry=r)
        self.events_rejected = PromCounter("inferwatch_events_rejected",
                                           "Events lost to dead letters", registry=r)
        self.incidents = PromCounter("inferwatch_incident_records", "Incident records published",
                                     ["detector", "status"], registry=r)
        self.batch = Histogram("inferwatch_batch_messages", "Messages per processing step",
                               buckets=(1, 10, 100, 1_000, 5_000, 20_000, 100_000), registry=r)
        self.step_seconds = Histogram("inferwatch_step_seconds", "Processing time per step",
                                      buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 10.0),
                                      registry=r)
        self.kernel_seconds = PromCounter("inferwatch_kernel_seconds",
                                          "Seconds spent in each detector", ["detector"],
                                          registry=r)
        self.lag = Gauge("inferwatch_consumer_lag", "High watermark minus next offset",
                         ["topic", "partition"], registry=r)
        self.models = Gauge("inferwatch_models", "Model versions with live detectors",
                            registry=r)
        self.open_incidents = Gauge("inferwatch_open_incidents", "Incidents not yet resolved",
                                    registry=r)
        self.shards = Gauge("inferwatch_shards_held", "Shards this worker holds", registry=r)
        self.checkpoints = PromCounter("inferwatch_checkpoints", "Checkpoint rounds",
                                       ["result"], registry=r)
        self.checkpoint_seconds = Histogram(
            "inferwatch_checkpoint_seconds", "Time to checkpoint every held shard",
            buckets=(0.01, 0.05, 0.2, 1.0, 5.0, 30.0), registry=r)
        self.checkpoint_pause_seconds = Histogram(
            "inferwatch_checkpoint_pause_seconds",
            "Time processing stops to serialise the held shards for a checkpoint",
            buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2.0), registry=r)
        self.checkpoint_bytes = Gauge("inferwatch_checkpoint_bytes",
                                      "Compressed size of the last checkpoint round",
                                      registry=r)
        self.forwarded = PromCounter("inferwatch_events_forwarded",
                                     "Events forwarded to their model's shard", registry=r)
        self.not_republished = PromCounter(
            "inferwatch_incidents_not_republished",
            "Incident records not published again after a restart", registry=r)
        self.evictions = PromCounter(
            "inferwatch_client_evictions",
            "Clients evicted from a per-client table (query_flood, extraction)", ["detector"],
            registry=r)
        self._kernel_seen: Counter = Counter()
        self._evictions_seen: Counter = Counter()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Start the HTTP endpoint in a background thread."""
        start_http_server(port, addr=addr, registry=self.registry)

    def observe_step(self, topics: Counter, n_events: int, rejects: list[Any],
                     incidents: list[dict[str, Any]], seconds: float,
                     engine_stats: dict[str, Any], kernel_seconds: Counter) -> None:
        for topic, n in topics.items():
            self.messages_in.labels(topic).inc(n)
        self.batch.observe(sum(topics.values()))
        self.step_seconds.observe(seconds)
        self.events_in.inc(n_events)
        for r in rejects:
            self.dead_letters.labels(r.code).inc()
            self.events_rejected.inc(r.rows)
        for rec in incidents:
            self.incidents.labels(rec["detector"], rec["status"]).inc()
        for det, total in kernel_seconds.items():
            delta = total - self._kernel_seen[det]
            if delta > 0:
                self.kernel_seconds.labels(det).inc(delta)
                self._kernel_seen[det] = total
        for det, total in engine_stats.get("evictions", {}).items():
            delta = total - self._evictions_seen[det]
            if delta > 0:
                self.evictions.labels(det).inc(delta)
                self._evictions_seen[det] = total
        self.models.set(engine_stats["models"])
        self.open_incidents.set(engine_stats["open_incidents"])
