"""A small producer client for model servers (built on kafka-python).

    from inferwatch import InferenceProducer

    with InferenceProducer("127.0.0.1:9092") as producer:
        producer.send({"event_id": "e-1", "timestamp_ms": 1767225600000,
                       "model_id": "fraud-scorer", "model_version": "3",
                       "client_id": "tenant-42", "features": [0.1, 2.3, 5.0],
                       "prediction": "legit", "scores": [0.93, 0.07]})

Messages are keyed by ``model_id``: Kafka's default partitioner then puts every event of a
model on the partition of the inferwatch shard that holds the model's detectors (see
:mod:`streams.sharding`), so nothing needs forwarding between workers.
With ``batch_size=N`` events are buffered per model and sent as ``InferenceBatch``
messages of up to N events, which is how high-rate servers should publish.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from kafka import KafkaProducer

from schemas.encoders import batch_avro, event_avro, event_json
from schemas.models import InferenceEvent


class InferenceProducer:
    """Publish inference events to inferwatch's input topics."""

    def __init__(
        self,
        bootstrap_servers: str = "127.0.0.1:9092",
        encoding: Literal["json", "avro"] = "json",
        batch_size: int = 0,
        topic_events: str = "inference-events",
        topic_batches: str = "inference-batches",
        validate: bool = True,
        **kafka_config: Any,
    ) -> None:
        kafka_config.setdefault("linger_ms", 5)
        kafka_config.setdefault("batch_size", 1 << 20)
        kafka_config.setdefault("max_request_size", 8 << 20)
        self._kafka = KafkaProducer(bootstrap_servers=bootstrap_servers, **kafka_config)
        self._encode = event_avro if encoding == "avro" else event_json
        self.batch_size = batch_size
        self.topic_events, self.topic_batches = topic_events, topic_batches
        self.validate = validate
        self._buffers: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def send(self, event: InferenceEvent | dict[str, Any]) -> None:
        """Publish one event (validated against the schema unless ``validate=False``)."""
        if isinstance(event, InferenceEvent):
            event = event.model_dump(exclude_none=True)
        elif self.validate:
            InferenceEvent.model_validate(event)
        if self.batch_size:
            key = (event["model_id"], event["model_version"])
            buf = self._buffers.setdefault(key, [])
            buf.append(event)
            if len(buf) >= self.batch_size:
                self._flush_model(key)
            return
        self._kafka.send(self.topic_events, key=event["model_id"].encode(),
                         value=self._encode(event))

    def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Publish pre-encoded bytes to the single-event topic (no validation)."""
        self._kafka.send(self.topic_events, key=key, value=value)

    def send_batch(
        self,
        model_id: str,
        model_version: str,
        event_ids: Sequence[str],
        timestamps_ms: Sequence[int] | np.ndarray,
        client_ids: Sequence[str],
        predictions: Sequence[str],
        features: np.ndarray,
        scores: np.ndarray | None = None,
        confidence: np.ndarray | None = None,
    ) -> None:
        """Publish many events of one model as one ``InferenceBatch`` message."""
        value = batch_avro(model_id, model_version, event_ids, timestamps_ms, client_ids,
                           predictions, features, scores, confidence)
        self._kafka.send(self.topic_batches, key=model_id.encode(), value=value)

    def _flush_model(self, key: tuple[str, str]) -> None:
        events = self._buffers.pop(key, [])
        if not events:
            return
        has_scores = events[0].get("scores") is not None
        self.send_batch(
            key[0], key[1],
            [e["event_id"] for e in events],
            [e["timestamp_ms"] for e in events],
            [e["client_id"] for e in events],
            [str(e["prediction"]) for e in events],
            np.array([e["features"] for e in events], dtype=np.float32),
            np.array([e["scores"] for e in events], dtype=np.float32) if has_scores else None,
            None if has_scores else np.array([e["confidence"] for e in events], np.float32),
        )

    def flush(self, timeout: float | None = 30.0) -> None:
        """Send buffered batches and wait until the broker acknowledged everything."""
        for key in list(self._buffers):
            self._flush_model(key)
        self._kafka.flush(timeout)

    def close(self) -> None:
        self.flush()
        self._kafka.close()

    def __enter__(self) -> InferenceProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
