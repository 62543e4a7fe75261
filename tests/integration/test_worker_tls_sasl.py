"""The worker itself over TLS + SCRAM-SHA-512: events in, incident out, no password in its log.

Its own embedded broker listens with TLS and SASL only (see streams/broker.py); the worker
is configured through INFERWATCH_* settings alone, like an operator would.
"""

from __future__ import annotations

import time
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from benchmarks.synthetic import make_block
from detectors.baseline import Profile, save_profiles
from schemas.encoders import event_json
from streams.broker import EmbeddedBroker, write_test_certificates
from streams.records import decode_incident
from streams.topics import ensure_topics
from tests.integration.workers import Worker, block_events, settings_from, topic_env

PASSWORD = "s3cret-Pa55-for-tls-test"  # noqa: S105 - test credential
MODEL = "tls-model"
T0 = 1_767_600_000_000


def test_worker_over_tls_and_sasl(tmp_path: Path) -> None:
    certs = write_test_certificates(tmp_path / "certs")
    base = tmp_path / "baselines"
    save_profiles([Profile.build(make_block(n=20000, seed=5, model_id=MODEL,
                                            start_ms=T0 - 400_000))], base)
    with EmbeddedBroker(cert=str(certs.cert), key=str(certs.key),
                        users={"inferwatch": PASSWORD}) as broker:
        env = {**topic_env("tls", 1), "INFERWATCH_BROKER": broker.url,
               "INFERWATCH_BASELINES": str(base),
               "INFERWATCH_SECURITY_PROTOCOL": "SASL_SSL",
               "INFERWATCH_SSL_CAFILE": str(certs.ca),
               "INFERWATCH_SASL_MECHANISM": "SCRAM-SHA-512",
               "INFERWATCH_SASL_USERNAME": "inferwatch",
               "INFERWATCH_SASL_PASSWORD": PASSWORD}
        settings = settings_from(env)
        client = settings.kafka_client_config()
        ensure_topics(broker.bootstrap, settings.all_topics(), **client)
        events = block_events(make_block(n=1000, seed=6, model_id=MODEL, start_ms=T0))
        burst = make_block(n=300, seed=7, model_id=MODEL, start_ms=T0 + 5000, interval_ms=2)
        burst.client_id[:] = "tls-flooder"
        events = sorted(events + block_events(burst), key=lambda e: e["timestamp_ms"])

        worker = Worker(env, tmp_path / "worker.log")
        try:
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, **client)
            for ev in events:
                producer.send(settings.topic_events, key=MODEL.encode(), value=event_json(ev))
            producer.flush()
            producer.close()
            consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                                     **client)
            tp = TopicPartition(settings.topic_incidents, 0)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            found = []
            deadline = time.monotonic() + 120
            while not found and time.monotonic() < deadline and worker.alive():
                for m in consumer.poll(timeout_ms=500).get(tp, []):
                    rec = decode_incident(m.value)
                    if rec["client_id"] == "tls-flooder":
                        found.append(rec)
            consumer.close()
            assert found, worker.tail(60)
            assert PASSWORD not in str(found)
        finally:
            worker.stop()
        assert broker.gateway is not None and broker.gateway.auth_failures == 0
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "tls-flooder" in log  # the log is the worker's (it names the incident) ...
    assert PASSWORD not in log  # ... and never shows the password
