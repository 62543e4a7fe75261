"""Transport security for every Kafka client inferwatch opens, built from :class:`Settings`.

One place turns ``INFERWATCH_SECURITY_PROTOCOL`` / ``INFERWATCH_SSL_*`` /
``INFERWATCH_SASL_*`` into the keyword arguments of the three client stacks in use:
kafka-python (producers, admin, assigned consumers), aiokafka (the bulk-ingest
consumer) and Faust (``broker_credentials``). Plaintext settings give ``{}``/``None``,
so unsecured deployments pass exactly what they passed before.

The SASL password stays a :class:`~pydantic.SecretStr` in the settings and is handed
to clients as a :class:`RedactedStr`: a real ``str`` (clients encode it) whose
``repr`` is masked, because kafka-python's ``KafkaAdminClient`` logs its whole
configuration at DEBUG. kafka-python also logs every request at DEBUG, and a SASL PLAIN
request carries the password itself, so building a SASL config also puts a filter on
the client libraries' loggers that masks it (:func:`redact_in_logs`). Nothing here logs.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only (settings imports this module lazily)
    from faust.types.auth import CredentialsT

    from streams.settings import Settings

MASK = "**********"
_TLS = ("SSL", "SASL_SSL")
_SASL = ("SASL_PLAINTEXT", "SASL_SSL")


class RedactedStr(str):
    """A ``str`` whose ``repr`` is masked, so dumps of a config dict do not show it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)


class _Redact(logging.Filter):
    """Replaces every registered secret in a log record's message by :data:`MASK`."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(secret in message for secret in self.secrets):
                for secret in self.secrets:
                    message = message.replace(secret, MASK)
                record.msg, record.args = message, None
        return True


_REDACT = _Redact()
#: Loggers of the client libraries that dump configs, requests or raw bytes at DEBUG.
CLIENT_LOGGERS = ("kafka", "kafka.admin.client", "kafka.conn", "kafka.net.connection",
                  "kafka.net.transport", "kafka.protocol.parser", "aiokafka", "aiokafka.conn")


def redact_in_logs(secret: str) -> None:
    """Mask ``secret`` (as text and as it appears inside a ``bytes`` repr) in every record
    of :data:`CLIENT_LOGGERS`. Idempotent."""
    if not secret:
        return
    _REDACT.secrets.update({secret, repr(secret.encode())[2:-1]})
    for name in CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)


def uses_tls(settings: Settings) -> bool:
    return settings.security_protocol in _TLS


def uses_sasl(settings: Settings) -> bool:
    return settings.security_protocol in _SASL


def check(settings: Settings) -> None:
    """Raise ``ValueError`` when the security settings cannot work together.

    SASL needs a user name and a password; a client certificate needs its key (and the
    other way round); TLS files are only read with SSL/SASL_SSL. Messages never contain
    the password.
    """
    if uses_sasl(settings) and (not settings.sasl_username or settings.sasl_password is None):
        raise ValueError(f"security_protocol={settings.security_protocol} needs "
                         "INFERWATCH_SASL_USERNAME and INFERWATCH_SASL_PASSWORD")
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise ValueError("INFERWATCH_SSL_CERTFILE and INFERWATCH_SSL_KEYFILE go together")
    tls_files = (settings.ssl_cafile, settings.ssl_certfile, settings.ssl_keyfile)
    if not uses_tls(settings) and any(f is not None for f in tls_files):
        raise ValueError(f"INFERWATCH_SSL_* files are set but security_protocol="
                         f"{settings.security_protocol} does not use TLS (SSL or SASL_SSL)")


def _password(settings: Settings) -> RedactedStr:
    assert settings.sasl_password is not None  # check() ran
    secret = settings.sasl_password.get_secret_value()
    redact_in_logs(secret)
    return RedactedStr(secret)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A client TLS context (CA from ``ssl_cafile`` or the system store, hostname checked,
    TLS 1.2+, optional client certificate), or ``None`` without TLS."""
    check(settings)
    if not uses_tls(settings):
        return None
    context = ssl.create_default_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.ssl_certfile is not None:
        context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile))
    return context


def kafka_python_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python ``KafkaProducer``, ``KafkaConsumer`` and admin."""
    check(settings)
    if settings.security_protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if uses_tls(settings):
        config["ssl_check_hostname"] = True
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(settings, name)
            if value is not None:
                config[name] = str(value)
    if uses_sasl(settings):
        config.update(sasl_mechanism=settings.sasl_mechanism,
                      sasl_plain_username=settings.sasl_username,
                      sasl_plain_password=_password(settings))
    return config


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka ``AIOKafkaConsumer``/``AIOKafkaProducer``."""
    check(settings)
    if settings.security_protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if uses_tls(settings):
        config["ssl_context"] = ssl_context(settings)
    if uses_sasl(settings):
        config.update(sasl_mechanism=settings.sasl_mechanism,
                      sasl_plain_username=settings.sasl_username,
                      sasl_plain_password=_password(settings))
    return config


def faust_broker_credentials(settings: Settings) -> CredentialsT | None:
    """``broker_credentials`` for ``faust.App``: SSL or SASL credentials, or ``None``."""
    import faust

    check(settings)
    context = ssl_context(settings)
    if uses_sasl(settings):
        return faust.SASLCredentials(username=settings.sasl_username,
                                     password=_password(settings),
                                     mechanism=settings.sasl_mechanism, ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None
