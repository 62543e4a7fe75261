"""TLS and SASL to the broker, end to end, configured only through ``Settings``.

Each broker here is this module's own :class:`EmbeddedBroker` (Tansu behind the TLS/SASL
gateway, see ``streams/broker.py``), with a throw-away CA made at test time. Clients are
the ones inferwatch runs: kafka-python (admin, producer) and aiokafka (a group consumer),
with exactly the keyword arguments ``Settings`` derives.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from streams import security
from streams.broker import EmbeddedBroker, TestCertificates, write_test_certificates
from streams.settings import Settings, settings_help

USER = "inferwatch"
#: Fresh per run, so finding it anywhere means it leaked.
PASSWORD = f"pw-{secrets.token_hex(12)}"
#: kafka-python retries bootstrap until this runs out; keep refusals quick.
FAIL_FAST = {"bootstrap_timeout_ms": 2500, "request_timeout_ms": 2500}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return write_test_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_broker(certs: TestCertificates) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(cert=certs.cert, key=certs.key) as b:
        yield b


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(users={USER: PASSWORD}) as b:
        yield b


@pytest.fixture(scope="module")
def sasl_ssl_broker(certs: TestCertificates) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(cert=certs.cert, key=certs.key, users={USER: PASSWORD}) as b:
        yield b


def tls_settings(broker: EmbeddedBroker, certs: TestCertificates) -> Settings:
    return Settings(broker=broker.url, security_protocol="SSL", ssl_cafile=certs.ca)


def sasl_settings(broker: EmbeddedBroker, mechanism: str = "SCRAM-SHA-512",
                  password: str = PASSWORD, certs: TestCertificates | None = None,
                  user: str = USER) -> Settings:
    return Settings(broker=broker.url, security_protocol="SASL_SSL" if certs else "SASL_PLAINTEXT",
                    ssl_cafile=certs.ca if certs else None, sasl_mechanism=mechanism,
                    sasl_username=user, sasl_password=password)


def produce(settings: Settings, topic: str, value: bytes) -> None:
    """Create ``topic`` (admin) and write one record (producer), both kafka-python."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap(), **FAIL_FAST,
                             **settings.kafka_client_config())
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap(), **FAIL_FAST,
                             **settings.kafka_client_config())
    try:
        meta = producer.send(topic, value).get(timeout=10)
        assert meta.topic == topic and meta.offset == 0
    finally:
        producer.close()


async def consume_one(settings: Settings, topic: str, timeout_s: float = 25.0) -> bytes:
    """First record of ``topic`` read by an aiokafka consumer in a fresh group."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap(),
                                group_id=f"g-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                session_timeout_ms=6000, **settings.aiokafka_client_config())
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                if records:
                    return records[0].value
        raise AssertionError(f"nothing read from {topic} in {timeout_s} s")
    finally:
        await consumer.stop()


async def aiokafka_send(config: dict, bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, **config)
    await asyncio.wait_for(producer.start(), 10)
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


# -- TLS ---------------------------------------------------------------------------------


def test_tls_round_trip(tls_broker: EmbeddedBroker, certs: TestCertificates) -> None:
    s = tls_settings(tls_broker, certs)
    value = uuid.uuid4().bytes
    produce(s, "tls-events", value)
    assert asyncio.run(consume_one(s, "tls-events")) == value


def test_plaintext_client_cannot_use_the_tls_port(tls_broker: EmbeddedBroker) -> None:
    # A Kafka ApiVersions v0 request in the clear gets no Kafka answer...
    request = struct.pack(">hhih", 18, 0, 7, 4) + b"test"
    with socket.create_connection(("127.0.0.1", tls_broker.port), timeout=5) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        reply = b""
        try:
            while chunk := sock.recv(4096):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert reply[4:8] != struct.pack(">i", 7), "a plaintext request got a Kafka response"
    # ... and a plaintext kafka-python client never gets past bootstrap.
    plain = Settings(broker=tls_broker.url)
    with pytest.raises(KafkaError):
        KafkaAdminClient(bootstrap_servers=plain.bootstrap(), **FAIL_FAST,
                         **plain.kafka_client_config())


def test_tls_client_verifies_the_broker_certificate(tls_broker: EmbeddedBroker) -> None:
    # Without our CA (system trust store only) the broker's certificate is refused.
    s = Settings(broker=tls_broker.url, security_protocol="SSL")
    with pytest.raises(KafkaError):
        KafkaAdminClient(bootstrap_servers=s.bootstrap(), **FAIL_FAST, **s.kafka_client_config())
    with pytest.raises((AIOKafkaError, OSError)):
        asyncio.run(aiokafka_send(s.aiokafka_client_config(), s.bootstrap(), "x", b"x"))


# -- SASL --------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_sasl_mechanisms(sasl_broker: EmbeddedBroker, mechanism: str) -> None:
    s = sasl_settings(sasl_broker, mechanism)
    topic = f"sasl-{mechanism.lower()}"
    produce(s, topic, b"k")
    asyncio.run(aiokafka_send(s.aiokafka_client_config(), s.bootstrap(), topic, b"a"))


def test_sasl_ssl_round_trip(sasl_ssl_broker: EmbeddedBroker, certs: TestCertificates) -> None:
    s = sasl_settings(sasl_ssl_broker, "SCRAM-SHA-512", certs=certs)
    value = uuid.uuid4().bytes
    produce(s, "sasl-ssl-events", value)
    assert asyncio.run(consume_one(s, "sasl-ssl-events")) == value
    # Faust's own aiokafka mapping of faust_broker_credentials() reaches the broker too.
    creds = security.faust_broker_credentials(s)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL"
    asyncio.run(aiokafka_send(auth, s.bootstrap(), "sasl-ssl-events", b"faust"))


@pytest.mark.parametrize("user,password", [(USER, "wrong-password"), ("mallory", PASSWORD)])
def test_sasl_rejects_bad_credentials(sasl_ssl_broker: EmbeddedBroker, certs: TestCertificates,
                                      user: str, password: str) -> None:
    gateway = sasl_ssl_broker.gateway
    assert gateway is not None
    before = gateway.auth_failures
    s = sasl_settings(sasl_ssl_broker, "SCRAM-SHA-256", password=password, certs=certs, user=user)
    with pytest.raises(KafkaError):
        KafkaAdminClient(bootstrap_servers=s.bootstrap(), **FAIL_FAST, **s.kafka_client_config())
    with pytest.raises(AIOKafkaError):
        asyncio.run(aiokafka_send(s.aiokafka_client_config(), s.bootstrap(), "x", b"x"))
    assert gateway.auth_failures > before


def test_sasl_port_refuses_unauthenticated_clients(sasl_ssl_broker: EmbeddedBroker,
                                                   certs: TestCertificates) -> None:
    tls_only = tls_settings(sasl_ssl_broker, certs)  # TLS fine, but no SASL
    with pytest.raises(KafkaError):
        KafkaAdminClient(bootstrap_servers=tls_only.bootstrap(), **FAIL_FAST,
                         **tls_only.kafka_client_config())


# -- credentials never shown -------------------------------------------------------------


def test_password_never_logged(sasl_ssl_broker: EmbeddedBroker, certs: TestCertificates,
                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = sasl_settings(sasl_ssl_broker, "SCRAM-SHA-512", certs=certs)
    produce(s, "sasl-logs", b"v")
    asyncio.run(aiokafka_send(s.aiokafka_client_config(), s.bootstrap(), "sasl-logs", b"w"))
    # PLAIN puts the password itself on the wire, and kafka-python logs each request.
    plain = sasl_settings(sasl_ssl_broker, "PLAIN", certs=certs)
    produce(plain, "sasl-logs-plain", b"p")
    bad = sasl_settings(sasl_ssl_broker, "PLAIN", password="not-the-password", certs=certs)
    with pytest.raises(KafkaError):
        KafkaAdminClient(bootstrap_servers=bad.bootstrap(), **FAIL_FAST,
                         **bad.kafka_client_config())
    text = caplog.text
    # kafka-python's admin client logs its whole configuration at DEBUG and its parser
    # every request (a PLAIN SaslAuthenticate holds the password): captured, masked.
    assert "sasl_plain_password" in text and "SaslAuthenticateRequest" in text
    assert security.MASK in text
    assert "authentication failed" in text  # the gateway's refusal, with no secret
    assert PASSWORD not in text


def test_password_never_printed(certs: TestCertificates, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERWATCH_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("INFERWATCH_SASL_USERNAME", USER)
    monkeypatch.setenv("INFERWATCH_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("INFERWATCH_SSL_CAFILE", str(certs.ca))
    s = Settings(broker="kafka://127.0.0.1:1")
    assert s.sasl_password is not None and s.sasl_password.get_secret_value() == PASSWORD
    kp, aio = s.kafka_client_config(), s.aiokafka_client_config()
    assert kp["sasl_plain_password"] == PASSWORD == aio["sasl_plain_password"]  # usable...
    shown = [repr(s), str(s), s.model_dump_json(), str(s.model_dump()), repr(kp), str(kp),
             repr(aio), repr(security.faust_broker_credentials(s)), settings_help()]
    for text in shown:  # ... but never shown
        assert PASSWORD not in text


# -- settings to client configs ----------------------------------------------------------


def test_plaintext_settings_add_nothing() -> None:
    s = Settings(broker="kafka://127.0.0.1:1")
    assert s.kafka_client_config() == {}
    assert s.aiokafka_client_config() == {}
    assert security.faust_broker_credentials(s) is None


def test_client_configs_per_protocol(certs: TestCertificates) -> None:
    tls = Settings(security_protocol="SSL", ssl_cafile=certs.ca)
    assert tls.kafka_client_config() == {"security_protocol": "SSL", "ssl_check_hostname": True,
                                         "ssl_cafile": str(certs.ca)}
    aio = tls.aiokafka_client_config()
    assert aio["security_protocol"] == "SSL" and aio["ssl_context"].check_hostname
    assert type(security.faust_broker_credentials(tls)).__name__ == "SSLCredentials"

    sasl = Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                    sasl_username=USER, sasl_password=PASSWORD)
    kp = sasl.kafka_client_config()
    assert {k: kp[k] for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username")} \
        == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_plain_username": USER}
    assert "ssl_context" not in sasl.aiokafka_client_config()
    creds = security.faust_broker_credentials(sasl)
    assert creds is not None and creds.protocol.value == "SASL_PLAINTEXT"
    assert creds.mechanism.value == "SCRAM-SHA-256"


@pytest.mark.parametrize("kwargs", [
    {"security_protocol": "SASL_SSL", "sasl_username": USER},          # no password
    {"security_protocol": "SASL_PLAINTEXT", "sasl_password": PASSWORD},  # no user
    {"security_protocol": "PLAINTEXT", "ssl_cafile": Path("/ca.pem")},  # TLS file, no TLS
    {"security_protocol": "SSL", "ssl_certfile": Path("/client.pem")},  # cert without key
])
def test_inconsistent_security_settings_are_refused(kwargs: dict) -> None:
    s = Settings(**kwargs)
    for build in (s.kafka_client_config, s.aiokafka_client_config,
                  lambda: security.faust_broker_credentials(s)):
        with pytest.raises(ValueError) as err:
            build()
        assert PASSWORD not in str(err.value)
