"""Runtime settings, read from ``INFERWATCH_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from detectors.config import DetectorConfig

_D = DetectorConfig()


class Settings(BaseSettings):
    """Everything ``inferwatch run`` reads. Each field is ``INFERWATCH_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="INFERWATCH_", extra="ignore")

    broker: str | None = Field(
        None, description="Kafka bootstrap URL, e.g. kafka://127.0.0.1:9092 (comma-separated "
        "for several). Unset: start the embedded broker on a free loopback port.")
    baselines: Path | None = Field(
        None, description="Directory of golden baseline profiles (inferwatch baseline build).")
    app_id: str = Field("inferwatch", description="Consumer group and Faust application id.")
    topic_events: str = Field("inference-events", description="Input: one event per message.")
    topic_batches: str = Field("inference-batches", description="Input: InferenceBatch messages.")
    topic_dlq: str = Field("inference-events-dlq", description="Rejected input, with reason.")
    topic_incidents: str = Field("ml-incidents", description="Incident records.")
    topic_incidents_ocsf: str = Field("ml-incidents-ocsf", description="Incidents as OCSF.")
    topic_actions: str = Field("ml-actions", description="Recommended containment actions.")
    topic_forensics: str = Field("ml-forensics", description="Frozen detector state.")
    topic_repartition: str | None = Field(
        None, description="Internal: events forwarded to the shard of their model "
        "(default <app_id>-repartition).")
    topic_checkpoints: str | None = Field(
        None, description="Internal: detector state checkpoints (default "
        "<app_id>-checkpoints).")
    topic_partitions: int = Field(1, description="Partitions of topics inferwatch creates: "
                                  "the number of shards, the most workers that share work.")
    checkpoint_interval_s: float = Field(
        5.0, description="Seconds between detector-state checkpoints; input offsets are "
        "committed only with a checkpoint, so this bounds the replay after a crash.")
    checkpoint_key: SecretStr | None = Field(
        None, description="When set, checkpoints are signed with HMAC-SHA256 under this key "
        "and unsigned ones are refused.")
    incident_format: Literal["json", "avro"] = Field(
        "json", description="Encoding of ml-incidents records: json or avro (Confluent wire "
        "format, schema id 3).")
    ingest: Literal["bulk", "agent"] = Field(
        "bulk", description="How the worker reads input: bulk (aiokafka fetches whole "
        "batches of raw messages inside the Faust app) or agent (a Faust agent, one event "
        "at a time through Faust's stream).")
    max_batch: int = Field(20_000, description="Most messages decoded and scored together.")
    batch_within_s: float = Field(0.05, description="Longest wait to fill a batch (seconds).")
    max_fetch_bytes: int = Field(32 << 20, description="Most bytes fetched per partition "
                                 "per request.")
    max_message_bytes: int = Field(1_000_000, description="Larger messages go to the DLQ.")
    window: int = Field(_D.window, description="Events in the drift/confidence window.")
    step: int = Field(_D.step, description="Events between two window tests.")
    budget_events: float = Field(
        _D.budget_events, description="Benign events per false alarm per detector and key.")
    warmup_events: int = Field(
        _D.warmup_events, description="Events profiled as baseline when a model has none.")
    cooldown_ms: int = Field(_D.cooldown_ms, description="Least event time between records "
                             "of one ongoing incident.")
    resolve_after_ms: int = Field(_D.resolve_after_ms, description="Quiet event time after "
                                  "which an incident resolves.")
    client_capacity: int = Field(_D.client_capacity, description="Per-client table slots "
                                 "(power of two, 92 bytes each).")
    data_dir: Path | None = Field(None, description="Worker's local state directory "
                                  "(default: <tmp>/inferwatch/<app_id>-data).")
    metrics_port: int = Field(9464, description="Prometheus /metrics port (0: off).")
    metrics_addr: str = Field("0.0.0.0", description="Address the metrics endpoint binds.")
    client_id_hmac_key: SecretStr | None = Field(
        None, description="When set, client ids in every published record are replaced by "
        "HMAC-SHA256(key, client_id).")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client connects: PLAINTEXT, SSL (TLS), "
        "SASL_PLAINTEXT or SASL_SSL (SASL over TLS).")
    ssl_cafile: Path | None = Field(
        None, description="PEM CA bundle that signs the broker certificate (SSL/SASL_SSL; "
        "default: the system store). The broker host name is always checked.")
    ssl_certfile: Path | None = Field(
        None, description="PEM client certificate, for brokers that require mutual TLS "
        "(with ssl_keyfile).")
    ssl_keyfile: Path | None = Field(
        None, description="PEM private key of ssl_certfile (unencrypted).")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism (SASL_PLAINTEXT/SASL_SSL). PLAIN "
        "sends the password itself: use it only with SASL_SSL.")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password (never logged or printed).")
    extraction_capacity: int = Field(_D.extraction_capacity, description="Clients tracked "
                                     "for extraction per model (power of two, ~5.8 kB each).")
    detector_threads: int = Field(_D.detector_threads, ge=1, le=2, description="Threads that run "
                                  "a model's detectors (2: extraction beside the others, "
                                  "so a worker uses two cores; 1: one after another).")
    session_timeout_s: float = Field(10.0, description="Consumer group session timeout.")
    rebalance_timeout_s: float = Field(10.0, description="Consumer group rebalance timeout.")
    log_level: Literal["crit", "error", "warn", "info", "debug"] = Field(
        "warn", description="Worker log level.")

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig(
            budget_events=self.budget_events,
            window=self.window,
            step=self.step,
            warmup_events=self.warmup_events,
            cooldown_ms=self.cooldown_ms,
            resolve_after_ms=self.resolve_after_ms,
            client_capacity=self.client_capacity,
            extraction_capacity=self.extraction_capacity,
            detector_threads=self.detector_threads,
        )

    def state_dir(self) -> Path:
        """Where the Faust worker keeps its local files (never the current directory)."""
        return self.data_dir or Path(tempfile.gettempdir()) / "inferwatch" / f"{self.app_id}-data"

    def kafka_client_config(self) -> dict:
        """Extra kafka-python client settings: transport security (``{}`` for PLAINTEXT)."""
        from streams import security

        return security.kafka_python_config(self)

    def aiokafka_client_config(self) -> dict:
        """Extra aiokafka client settings: transport security (``{}`` for PLAINTEXT)."""
        from streams import security

        return security.aiokafka_config(self)

    def bootstrap(self) -> str:
        """``host:port[,host:port]`` for kafka-python from the ``kafka://`` URL."""
        if not self.broker:
            raise ValueError("no broker configured")
        return ",".join(u.split("://", 1)[-1] for u in self.broker.split(","))

    def repartition_topic(self) -> str:
        return self.topic_repartition or f"{self.app_id}-repartition"

    def checkpoint_topic(self) -> str:
        return self.topic_checkpoints or f"{self.app_id}-checkpoints"

    def sharded_topics(self) -> list[str]:
        """Topics that must all have ``topic_partitions`` partitions (one per shard)."""
        return [self.topic_events, self.topic_batches, self.repartition_topic(),
                self.topic_incidents, self.checkpoint_topic()]

    def all_topics(self) -> list[str]:
        return [
            self.topic_events, self.topic_batches, self.topic_dlq, self.topic_incidents,
            self.topic_incidents_ocsf, self.topic_actions, self.topic_forensics,
            self.repartition_topic(), self.checkpoint_topic(),
        ]


def settings_help() -> str:
    """One line per setting, for ``inferwatch run --help``."""
    lines = []
    for name, f in Settings.model_fields.items():
        default = f.default
        lines.append(f"  INFERWATCH_{name.upper():<22} {f.description} [default: {default}]")
    return "\n".join(lines)
