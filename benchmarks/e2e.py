"""End-to-end throughput and latency of the real worker through the real broker.

Why: the kernel benchmarks time the detection core alone; an operator sizing a
deployment needs events per second *through Kafka*: fetch, decode, detect, publish,
with Faust and aiokafka in the loop, and how long an incident takes to show up on
``ml-incidents`` after the event that triggered it.

What runs (one :class:`~streams.broker.EmbeddedBroker` for everything):

- **Throughput cases** -- single-event JSON, single-event Avro, and ``InferenceBatch``
  messages of ``batch_size`` events. Each case gets its own topic set and application id
  (so consumer groups never collide). Its topic is pre-loaded with synthetic traffic of
  ``d=32`` features (:func:`benchmarks.synthetic.make_block`, 50 clients) carrying a
  flooding client at 80-85 % of the stream and a drift of two features in the last 10 %,
  so the worker publishes incidents while measured. A golden baseline of the same model
  (``Profile.build`` + ``save_profiles``) is passed as ``INFERWATCH_BASELINES``, so every
  detector is live from the first event. Then ``python -m streams.cli run`` starts and
  its Prometheus counter ``inferwatch_events_in_total`` is scraped every ``poll_s``.
  Startup (imports, group join) is not measured: the rate is events processed after the
  first scrape that saw a non-zero count, divided by the time from that scrape to the
  first scrape that saw all ``N``; ``(N - c_first) / (t_last - t_first)``. When
  everything was processed before the first non-zero scrape (one step), the scrapes
  cannot time it and the time inside the pipeline is used instead (an upper bound,
  flagged in ``rate_method``).
  From the same scrapes, ``inferwatch_step_seconds_sum`` gives the time spent inside
  :meth:`streams.pipeline.Pipeline.step` (detect + encode; the bulk ingest decodes each
  fetch ahead, on its decode thread, while the previous step runs) over the same
  interval, hence the *pipeline-only* rate and the share of wall time the worker spends
  in the pipeline; the rest is waiting for the next fetch and publishing.
  Each scrape also reads ``/proc``: the worker's CPU seconds (all threads) give its CPU
  use in cores and events per CPU-second, and the machine's busy time minus the
  worker's, the broker's and the benchmark's own gives the CPU taken by *other
  processes* -- on a shared machine that column says whether the numbers were taken
  under contention.
- **Naive baseline** -- :mod:`benchmarks.naive_agent`, a Faust agent with a
  ``faust.Record`` event model, ``value_serializer="json"``, one event at a time and a
  pure-Python detector, on the single-event JSON case's topic (its own consumer group),
  measured the same way from its ``naive_events_in`` gauge.

  Sizes: full pre-loads 200,000 events per single-event case and 5,000,000 for the batch
  case, so the batch rate is a sustained one: at about a million events/s, 1,000,000
  events take one second, which the 0.2 s scrapes time up to a fifth too long, and the
  worker's first steps and its first checkpoint weigh in it; ``--quick`` 5,000 and
  100,000 (20 messages: fewer would be processed in one or two steps, which the scrapes
  cannot time).
- **Live-mix capacity** -- the latency run's traffic is heavier per event than the batch
  case (``rate / 20`` benign clients, query floods, an extraction attacker, a drift), so
  its maximum is measured on that traffic itself: :class:`LiveTraffic` generates
  ``mix_events`` events of every phase in order, stamped in the past at the nominal rate
  (half the batch case's rate, or ``--latency-rate``), pre-loads them, and a worker with
  the live run's settings drains them, timed like the other cases (``live_mix``). The
  live workers' extraction table is sized to hold every active client
  (:func:`live_settings`), as an operator would size ``INFERWATCH_EXTRACTION_CAPACITY``.
- **Latency** -- a live run on fresh topics: a worker is started and caught up (it has
  processed a warm-up second of traffic, sent before it started: records of those events
  are counted apart, not in the latencies), then ``InferenceBatch`` traffic from the same
  generator and clients is produced at half the live-mix case's measured rate
  (``--latency-rate`` overrides; ``--quick`` uses 5,000 events/s) for ``latency_s``
  seconds, in ticks of ``tick_s``. Event timestamps
  are wall clock, spread over the tick before the message is sent; benign rows are drawn
  fresh from the reference distribution every tick (never resent). Query floods by
  several clients and an input drift are injected; ``INFERWATCH_COOLDOWN_MS`` is 500 so
  an ongoing incident emits an ``update`` record about every second (more samples; it
  changes how often records are emitted, not when a detection happens). ``ml-incidents``
  is read by a group-less kafka-python consumer (``assign()``) in a thread. For every
  ``open``/``update`` record: **event-to-incident** = arrival wall time minus the trigger
  event's ``timestamp_ms``; split into event-to-publish (the record's Kafka CreateTime,
  stamped by the worker's producer) and publish-to-arrival; and **send-to-incident**
  (arrival minus the wall time the trigger's message was handed to the producer, which
  leaves out the producer-side tick).

Producing: the pre-load and the live traffic use librdkafka (``confluent-kafka``, a test
extra) when it is installed, with the project's own encoders
(:mod:`schemas.encoders`), so the bytes are exactly what ``InferenceProducer`` sends.
librdkafka batches and compresses in C, so the producer side of the benchmark takes as
little of the two shared cores as possible. Without confluent-kafka the benchmark falls
back to kafka-python (with the ``crc32c`` package inferwatch depends on, so record-batch
checksums are computed in C, not in pure Python).

``INFERWATCH_*`` variables set in the caller's environment reach the workers (e.g.
``INFERWATCH_MAX_BATCH``) and are recorded in the report. ``--profile`` samples each
worker with py-spy (when installed) and adds its hottest frames to the report.

``python -m benchmarks.e2e [--quick] [--out DIR] [--events N]`` writes ``e2e.json``,
``e2e.md`` and ``e2e.png`` to ``DIR`` (default ``bench-out/``), worker logs to
``DIR/e2e-logs/``, and prints the table; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.synthetic import T0_MS, block_to_events, make_block, softmax_scores
from detectors.baseline import Profile, save_profiles
from detectors.block import EventBlock
from schemas.encoders import batch_avro, event_avro, event_json
from streams.broker import EmbeddedBroker, free_port
from streams.topics import ensure_topics

D = 32  # features per event
N_CLIENTS = 50
MODEL, VERSION = "e2e-model", "1"
LATENCY_MODEL = "e2e-live"
#: Incident cooldown of the live-mix and latency workers: an ongoing incident emits an
#: ``update`` about every second, which gives the latency distribution more samples.
LIVE_COOLDOWN_MS = "500"
DRIFT_FEATURES = (3, 7)
EVENTS_METRIC = "inferwatch_events_in_total"
NAIVE_METRIC = "naive_events_in"


@dataclass(frozen=True)
class Size:
    single_events: int  # events of each single-event case (and the naive baseline)
    batch_events: int  # events of the batch case
    batch_size: int  # events per InferenceBatch message
    poll_s: float  # metrics scrape interval
    latency_s: float  # live traffic duration
    latency_rate: float | None  # events/s of the live run; None: half the live-mix maximum
    mix_events: int = 600_000  # events of the live-mix capacity case
    tick_s: float = 0.05  # live producer tick
    start_timeout_s: float = 90.0  # worker start to first processed event
    stall_timeout_s: float = 60.0  # longest time without progress once started


SIZES = {
    "full": Size(single_events=200_000, batch_events=5_000_000, batch_size=5_000, poll_s=0.2,
                 latency_s=20.0, latency_rate=None),
    "quick": Size(single_events=5_000, batch_events=100_000, batch_size=5_000, poll_s=0.05,
                  latency_s=10.0, latency_rate=5_000.0, mix_events=100_000),
}


@dataclass
class Case:
    """One throughput measurement."""

    name: str  # single_json, single_avro, batch, naive_json
    label: str
    encoding: str  # json, avro, batch
    events: int
    messages: int = 0
    bytes: int = 0
    events_per_s: float = 0.0
    rate_method: str = ""
    pipeline_events_per_s: float | None = None
    pipeline_share: float | None = None  # of wall time inside Pipeline.step
    kernel_seconds: dict[str, float] = field(default_factory=dict)
    step_seconds: float | None = None
    steps: int | None = None
    incident_records: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    startup_s: float = 0.0  # worker start to first scrape with events
    measured_s: float = 0.0  # first to last scrape
    cpu_seconds: float | None = None  # worker process CPU (all threads) over measured_s
    cpu_share: float | None = None  # cpu_seconds / measured_s (1.0 = one core)
    other_cpu: float | None = None  # cores used by processes outside the benchmark
    events_per_cpu_s: float | None = None
    loadavg: list[float] = field(default_factory=list)  # 1-min load at start and end
    c_first: float = 0.0
    samples: int = 0
    profile: dict[str, Any] | None = None


# -- progress -----------------------------------------------------------------------------
_T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[e2e {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# -- traffic ------------------------------------------------------------------------------
def reference_profile(model_id: str = MODEL, n: int = 20_000, interval_ms: float = 10.0,
                      n_clients: int = N_CLIENTS, start_ms: int = T0_MS - 3_600_000) -> Profile:
    """Golden baseline from benign traffic like the benchmark's (an hour earlier)."""
    ref = make_block(n=n, d=D, seed=1000, model_id=model_id, interval_ms=interval_ms,
                     n_clients=n_clients, start_ms=start_ms, id_prefix="ref")
    return Profile.build(ref, source="e2e benchmark reference")


def traffic(n: int, seed: int) -> EventBlock:
    """``n`` events of the benchmark model: benign, a flood at 80-85 %, drift in the last 10 %.

    The flooding client ``flooder-1`` takes 40 % of the events of its segment (about 40
    queries/s of event time against 2/s for a benign client); features 3 and 7 move by
    one standard deviation.
    """
    block = make_block(n=n, d=D, seed=seed, model_id=MODEL, model_version=VERSION,
                       n_clients=N_CLIENTS, id_prefix=f"b{seed}-")
    rng = np.random.default_rng(seed + 1)
    lo, hi = int(0.80 * n), int(0.85 * n)
    seg = block.client_id[lo:hi]
    seg[rng.random(hi - lo) < 0.4] = "flooder-1"
    block.X[int(0.9 * n):, list(DRIFT_FEATURES)] += np.float32(1.0)
    return block


class Sender:
    """Raw bytes to topics: librdkafka when ``confluent-kafka`` is installed, else kafka-python."""

    def __init__(self, bootstrap: str, linger_ms: int = 5) -> None:
        self.kind = "kafka-python"
        self._ck: Any = None
        self._kp: Any = None
        try:
            from confluent_kafka import Producer
        except ImportError:
            from kafka import KafkaProducer

            self._kp = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms,
                                     batch_size=1 << 20, max_request_size=8 << 20)
            return
        self.kind = "confluent-kafka"
        self._ck = Producer({
            "bootstrap.servers": bootstrap,
            "linger.ms": linger_ms,
            "message.max.bytes": 8 << 20,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 2 << 20,
            "enable.idempotence": False,
            "acks": 1,
            "log_level": 3,
        })
        self._errors: list[str] = []

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        if self._kp is not None:
            self._kp.send(topic, key=key, value=value)
            return
        while True:
            try:
                self._ck.produce(topic, value=value, key=key, on_delivery=self._delivered)
                break
            except BufferError:
                self._ck.poll(0.05)
        self._ck.poll(0)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def flush(self, timeout_s: float = 120.0) -> None:
        if self._kp is not None:
            self._kp.flush(timeout_s)
            return
        left = self._ck.flush(timeout_s)
        if left or self._errors:
            raise RuntimeError(f"producer: {left} message(s) undelivered, errors: "
                               f"{self._errors[:3]}")

    def close(self) -> None:
        if self._kp is not None:
            self._kp.close()
        elif self._ck is not None:
            self.flush()
        self._kp = self._ck = None  # librdkafka's client is destroyed with its last reference


def preload(sender: Sender, encoding: str, block: EventBlock, topics: dict[str, str],
            batch_size: int, chunk: int = 10_000) -> tuple[int, int]:
    """Publish ``block`` to the case's input topic; returns (messages, bytes)."""
    messages = size = 0
    for s in range(0, len(block), chunk if encoding != "batch" else batch_size):
        part = block.take(slice(s, s + (chunk if encoding != "batch" else batch_size)))
        if encoding == "batch":
            value = batch_avro(part.model_id, part.model_version, part.event_id, part.ts,
                               part.client_id, part.prediction, part.X, part.scores)
            sender.send(topics["batches"], value, part.model_id.encode())
            messages += 1
            size += len(value)
            continue
        encode = event_avro if encoding == "avro" else event_json
        for ev in block_to_events(part):
            value = encode(ev)
            sender.send(topics["events"], value, ev["client_id"].encode())
            messages += 1
            size += len(value)
    sender.flush()
    return messages, size


# -- processes and metrics ----------------------------------------------------------------
def topic_set(prefix: str) -> dict[str, str]:
    names = ("events", "batches", "dlq", "incidents", "incidents_ocsf", "actions", "forensics")
    return {n: f"{prefix}-{n.replace('_', '-')}" for n in names}


def worker_env(broker_url: str, topics: dict[str, str], app_id: str, baselines: Path,
               metrics_port: int, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "INFERWATCH_BROKER": broker_url,
        "INFERWATCH_APP_ID": app_id,
        "INFERWATCH_BASELINES": str(baselines),
        "INFERWATCH_METRICS_PORT": str(metrics_port),
        "INFERWATCH_METRICS_ADDR": "127.0.0.1",
        "INFERWATCH_LOG_LEVEL": "warn",
        "INFERWATCH_SESSION_TIMEOUT_S": "6",
        "INFERWATCH_REBALANCE_TIMEOUT_S": "6",
        # Faust's local state, beside the baselines in the benchmark's temporary directory.
        "INFERWATCH_DATA_DIR": str(baselines.parent / f"{app_id}-data"),
        **{f"INFERWATCH_TOPIC_{k.upper()}": v for k, v in topics.items()},
        **extra,
    }
    return env


def start_process(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def stop_process(proc: subprocess.Popen | None, timeout_s: float = 15.0) -> None:
    """Terminate, wait, then kill: never leaves the process behind."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def log_tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def scrape(port: int, timeout_s: float = 2.0) -> dict[str, float] | None:
    """Every sample of a Prometheus text endpoint (``name{labels}`` -> value); None if down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            text = r.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def _labels(key: str) -> dict[str, str]:
    """``name{a="x",b="y"}`` -> ``{"a": "x", "b": "y"}``."""
    inner = key[key.index("{") + 1:-1] if "{" in key else ""
    return {k: v.strip('"') for k, _, v in (p.partition("=") for p in inner.split(",") if p)}


def _labelled(sample: dict[str, float], prefix: str) -> dict[str, dict[str, str]]:
    return {k: _labels(k) for k in sample if k.startswith(prefix + "{")}


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CPU_KEY = "__process_cpu_seconds"


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, all threads (Linux ``/proc``; else None)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


MACHINE_KEY = "__machine_busy_seconds"
OURS_KEY = "__benchmark_cpu_seconds"


def machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs spent busy since boot (Linux ``/proc/stat``; else None)."""
    try:
        with open("/proc/stat", "rb") as fh:
            f = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = f
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def crashed(log_path: Path) -> str | None:
    """The agent-crash line of a Faust worker log (the process lives on), if any."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if "Crashed reason=" in line:
            return line.strip()
    return None


@dataclass
class Progress:
    t_start: float
    samples: list[tuple[float, dict[str, float]]]  # (monotonic time, scrape)


def watch(proc: subprocess.Popen, port: int, metric: str, n: int, size: Size,
          log_path: Path, what: str, also: tuple[int, ...] = ()) -> Progress:
    """Scrape ``metric`` until it reaches ``n``; raise if the process dies or stalls.

    Each scrape also records the CPU seconds of the process, of the benchmark's own
    processes (this one and ``also``, e.g. the broker) and of the whole machine, so
    CPU taken by anything else during the measurement can be reported.
    """
    t_start = time.monotonic()
    samples: list[tuple[float, dict[str, float]]] = []
    last_value, last_change = 0.0, t_start
    next_say = t_start + 5.0
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}; "
                               f"log {log_path}:\n{log_tail(log_path)}")
        t0 = time.monotonic()
        m = scrape(port)
        now = (t0 + time.monotonic()) / 2
        value = m.get(metric, 0.0) if m else 0.0
        if m is not None:
            cpu = process_cpu_seconds(proc.pid)
            ours = [process_cpu_seconds(p) for p in (os.getpid(), *also)]
            busy = machine_busy_seconds()
            if cpu is not None:
                m[CPU_KEY] = cpu
                if busy is not None and None not in ours:
                    m[MACHINE_KEY] = busy
                    m[OURS_KEY] = cpu + sum(x for x in ours if x is not None)
            samples.append((now, m))
        if value >= n:
            return Progress(t_start, samples)
        if value != last_value:
            last_value, last_change = value, now
        if value == 0 and now - t_start > size.start_timeout_s:
            raise TimeoutError(f"{what}: nothing processed {size.start_timeout_s:g} s after "
                               f"start; log {log_path}:\n{log_tail(log_path)}")
        if value > 0 and now - last_change > size.stall_timeout_s:
            raise TimeoutError(f"{what}: stuck at {value:,.0f} of {n:,} events; log "
                               f"{log_path}:\n{log_tail(log_path)}")
        if now >= next_say:
            say(f"  {what}: {value:,.0f} / {n:,} events")
            next_say = now + 10.0
            crash = crashed(log_path)
            if crash:
                raise RuntimeError(f"{what}: the agent crashed: {crash}; log {log_path}:\n"
                                   f"{log_tail(log_path, 40)}")
        time.sleep(max(0.0, size.poll_s - (time.monotonic() - t0)))


def rate_from(progress: Progress, metric: str, n: int, case: Case) -> None:
    """Fill the case's rate fields from the scrapes (see the module docstring)."""
    s = progress.samples
    first = next(i for i, (_, m) in enumerate(s) if m.get(metric, 0.0) > 0)
    last = next(i for i, (_, m) in enumerate(s) if m.get(metric, 0.0) >= n)
    t_first, m_first = s[first]
    t_last, m_last = s[last]
    c_first = m_first.get(metric, 0.0)
    case.startup_s = t_first - progress.t_start
    case.c_first = c_first
    case.samples = len(s)
    step = m_last.get("inferwatch_step_seconds_sum")
    if last > first and c_first < n:
        case.rate_method = "after the first non-zero scrape"
        t_from, m_from, done = t_first, m_first, n - c_first
        case.measured_s = t_last - t_from
    else:
        # Everything was processed before the first non-zero scrape (one step, or one
        # scrape interval): the scrapes cannot time it. Use the time inside the pipeline
        # (worker), else the scrape interval (naive agent: it counts every event).
        (t_from, m_from), done = (s[first - 1] if first else (progress.t_start, {})), n
        if step:
            case.rate_method = "all in one step: pipeline time only (upper bound)"
            case.measured_s = step
        else:
            case.rate_method = "all in one scrape interval (lower bound)"
            case.measured_s = t_last - t_from
    case.events_per_s = done / max(case.measured_s, 1e-6)
    if step is not None:
        busy = step - m_from.get("inferwatch_step_seconds_sum", 0.0)
        if busy > 0:
            case.pipeline_events_per_s = done / busy
            case.pipeline_share = min(busy / max(case.measured_s, 1e-6), 1.0)
    if CPU_KEY in m_last and CPU_KEY in m_from:
        case.cpu_seconds = round(m_last[CPU_KEY] - m_from[CPU_KEY], 2)
        case.cpu_share = case.cpu_seconds / max(t_last - t_from, 1e-6)
        if case.cpu_seconds > 0:
            case.events_per_cpu_s = done / case.cpu_seconds
    if MACHINE_KEY in m_last and MACHINE_KEY in m_from:
        other = (m_last[MACHINE_KEY] - m_from[MACHINE_KEY]) - (m_last[OURS_KEY] - m_from[OURS_KEY])
        case.other_cpu = round(max(other, 0.0) / max(t_last - t_from, 1e-6), 2)
    if step is not None:
        case.step_seconds = step
        case.steps = int(m_last.get("inferwatch_step_seconds_count", 0))
        case.kernel_seconds = {
            lab.get("detector", "?"): round(m_last[k], 4)
            for k, lab in _labelled(m_last, "inferwatch_kernel_seconds_total").items()}
        case.incident_records = dict(sorted(
            (f"{lab.get('detector')}/{lab.get('status')}", int(m_last[k]))
            for k, lab in _labelled(m_last, "inferwatch_incident_records_total").items()))
        case.dead_letters = int(sum(
            m_last[k] for k in _labelled(m_last, "inferwatch_dead_letters_total")))


# -- py-spy -------------------------------------------------------------------------------
def _py_spy() -> str | None:
    return shutil.which("py-spy") or next(
        (str(p) for p in [Path(sys.executable).parent / "py-spy"] if p.exists()), None)


def start_profiler(pid: int, out: Path) -> subprocess.Popen | None:
    exe = _py_spy()
    if exe is None:
        say("  --profile: py-spy not found (pip install py-spy); not profiling")
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                             "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(proc: subprocess.Popen | None, out: Path, top: int = 15) -> dict | None:
    if proc is None:
        return None
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    return summarize_profile(out, top) if out.exists() else None


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per frame of a py-spy ``raw`` (collapsed) profile."""
    own: Counter = Counter()
    incl: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    share = (lambda c: [[f, round(v / total, 4)] for f, v in c.most_common(top)]) if total else (
        lambda c: [])
    return {"samples": total, "file": path.name, "self": share(own), "inclusive": share(incl)}


# -- throughput ---------------------------------------------------------------------------
def run_case(case: Case, broker: EmbeddedBroker, topics: dict[str, str], baselines: Path,
             size: Size, out: Path, run_id: str, profile: bool, **env_extra: str) -> Case:
    port = free_port()
    log_path = out / "e2e-logs" / f"{case.name}.log"
    if case.name == "naive_json":
        env = {**os.environ, "NAIVE_BROKER": broker.url, "NAIVE_APP_ID": f"{run_id}-naive",
               "NAIVE_TOPIC": topics["events"], "NAIVE_ALERTS_TOPIC": f"{run_id}-naive-alerts",
               "NAIVE_METRICS_PORT": str(port), "NAIVE_SESSION_TIMEOUT_S": "6",
               "NAIVE_DATA_DIR": str(baselines.parent / f"{run_id}-naive-data")}
        cmd, metric = [sys.executable, "-m", "benchmarks.naive_agent"], NAIVE_METRIC
    else:
        env = worker_env(broker.url, topics, f"{run_id}-{case.name}", baselines, port,
                         **env_extra)
        cmd, metric = [sys.executable, "-m", "streams.cli", "run"], EVENTS_METRIC
    say(f"{case.label}: starting worker, {case.events:,} events waiting")
    case.loadavg = [round(os.getloadavg()[0], 2)]
    proc = start_process(cmd, env, log_path)
    prof = None
    try:
        if profile:
            prof = start_profiler(proc.pid, out / f"e2e-profile-{case.name}.txt")
        also = tuple(p.pid for p in (broker.proc, prof) if p is not None)
        progress = watch(proc, port, metric, case.events, size, log_path, case.label, also)
        if prof is not None:
            case.profile = stop_profiler(prof, out / f"e2e-profile-{case.name}.txt")
            prof = None
    finally:
        if prof is not None:
            stop_profiler(prof, out / f"e2e-profile-{case.name}.txt")
        stop_process(proc)
    case.loadavg.append(round(os.getloadavg()[0], 2))
    rate_from(progress, metric, case.events, case)
    extra = ""
    if case.cpu_share is not None:
        extra += f"; worker CPU {case.cpu_share:.2f} cores"
    if case.other_cpu is not None:
        extra += f"; other processes {case.other_cpu:.2f} cores"
    if case.pipeline_events_per_s:
        extra += (f"; pipeline-only {case.pipeline_events_per_s:,.0f}/s "
                 f"({case.pipeline_share:.0%} of wall time in Pipeline.step)")
    say(f"{case.label}: {case.events_per_s:,.0f} events/s over {case.measured_s:.2f} s "
        f"(started after {case.startup_s:.1f} s){extra}")
    return case


# -- latency ------------------------------------------------------------------------------
class IncidentReader(threading.Thread):
    """Reads a topic from the start with an assigned, group-less consumer; stamps arrivals."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.items: list[tuple[float, int, bytes]] = []  # (arrival s, CreateTime ms, value)
        self.error: BaseException | None = None

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        try:
            consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                     enable_auto_commit=False, fetch_max_wait_ms=20)
            consumer.assign([TopicPartition(self.topic, 0)])
            consumer.seek_to_beginning()
            consumer.poll(timeout_ms=100)
            self.ready.set()
            while not self.stop.is_set():
                for recs in consumer.poll(timeout_ms=50).values():
                    now = time.time()
                    self.items.extend((now, r.timestamp, r.value) for r in recs)
            consumer.close()
        except BaseException as exc:  # reported by the caller
            self.error = exc
            self.ready.set()


def _buckets(sample: dict[str, float], name: str) -> dict[str, int]:
    """A scraped Prometheus histogram as counts per bucket (not cumulative)."""
    cum = sorted((float(lab["le"]), int(sample[k]))
                 for k, lab in _labelled(sample, f"{name}_bucket").items() if "le" in lab)
    out, prev = {}, 0
    for le, c in cum:
        out["+Inf" if le == float("inf") else f"{le:g}"] = c - prev
        prev = c
    return out


def _dist(values: list[float], min_n_p99: int = 20) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p99": round(float(np.percentile(a, 99)), 1) if a.size >= min_n_p99 else None,
        "max": round(float(a.max()), 1),
        "min": round(float(a.min()), 1),
    }


class LiveTraffic:
    """Batch traffic at ``rate`` events/s with wall-clock timestamps, floods, an extraction
    attacker and a drift.

    Benign rows are drawn fresh for every tick from the distribution the reference profile
    was built from (:func:`benchmarks.synthetic.make_block`: standard normal features,
    class scores of the same fixed linear model), so benign clients never repeat a query.
    Resampling a fixed pool of rows would make every benign client resend its own earlier
    queries and look like an extraction attack (near-duplicates), which is not what this
    run measures.
    """

    def __init__(self, rate: float, batch_size: int, seconds: float, seed: int = 11,
                 n_clients: int | None = None) -> None:
        self.rate, self.batch_size, self.seconds = rate, batch_size, seconds
        #: default ~20 queries/s per benign client
        self.n_clients = n_clients or live_clients(rate)
        self.client_names = np.array([f"client-{c}" for c in range(self.n_clients)],
                                     dtype=object)
        self.rng = np.random.default_rng(seed)
        self.msg_sent_s: list[float] = []  # wall time each message was handed to the producer
        self.sent = 0
        self.bytes_sent = 0
        #: (start fraction, end fraction, client ids): eight flooding clients per phase ...
        self.floods = [(0.1, 0.5, [f"flood-a{i}" for i in range(8)]),
                       (0.5, 0.9, [f"flood-b{i}" for i in range(8)])]
        #: ... each at 15 benign clients' rate, all together at most 30 % of the traffic
        #: (flood events are part of ``rate``, not added to it).
        self.flood_rate = min(15 * rate / self.n_clients, 0.3 * rate / 8)
        #: One extraction attacker from 20 % to 60 % of the run, at a benign client's rate:
        #: small perturbations of four seed queries (near-duplicates, as when a model is
        #: copied by augmenting a few seed points).
        self.attack = (0.2, 0.6, "extractor-1")
        self.attack_rate = rate / self.n_clients
        self.attack_seeds = self.rng.normal(0.0, 1.0, (4, D)).astype(np.float32)
        self._attack_carry = 0.0
        self.drift_from = 0.7

    def profile(self) -> Profile:
        n = int(min(max(self.rate * 2, 20_000), 200_000))
        return reference_profile(LATENCY_MODEL, n=n, interval_ms=1000.0 / self.rate,
                                 n_clients=self.n_clients,
                                 start_ms=int(time.time() * 1000) - 3_600_000)

    def _attack_rows(self, phase: float | None, dt_s: float) -> np.ndarray:
        lo, hi, _ = self.attack
        if phase is None or not lo <= phase < hi:
            return np.empty((0, D), dtype=np.float32)
        self._attack_carry += self.attack_rate * dt_s
        k = int(self._attack_carry)
        self._attack_carry -= k
        pick = self.rng.integers(0, len(self.attack_seeds), k)
        noise = self.rng.normal(0.0, 0.02, (k, D)).astype(np.float32)
        return self.attack_seeds[pick] + noise

    def tick(self, sender: Sender, topic: str, t_prev_ms: float, phase: float | None,
             n: int, now_ms: float | None = None) -> int:
        """Publish ``n`` events (benign, flood and attack) stamped in (t_prev_ms, now_ms].

        ``now_ms`` defaults to the wall clock (the live run); the capacity pre-load passes
        a clock of its own.
        """
        now_ms = time.time() * 1000.0 if now_ms is None else now_ms
        flooders = [c for lo, hi, cs in self.floods if phase is not None and lo <= phase < hi
                    for c in cs]
        per = int(round(self.flood_rate * n / self.rate)) if flooders else 0
        attack = self._attack_rows(phase, max(now_ms - t_prev_ms, 0.0) / 1000.0)
        benign = max(n - per * len(flooders) - len(attack), 0)
        n_fresh = benign + per * len(flooders)
        X = np.concatenate([self.rng.standard_normal((n_fresh, D), dtype=np.float32), attack])
        S = softmax_scores(X, 3, self.rng)
        clients = np.concatenate([
            self.client_names[self.rng.integers(0, self.n_clients, benign)],
            np.repeat(np.array(flooders, dtype=object), per),
            np.full(len(attack), self.attack[2], dtype=object),
        ])
        m = len(X)
        order = self.rng.permutation(m)
        X, S, clients = X[order], S[order], clients[order]
        preds = np.array(["0", "1", "2"], dtype=object)[S.argmax(axis=1)]
        if phase is not None and phase >= self.drift_from:
            X[:, list(DRIFT_FEATURES)] += np.float32(1.0)
        ts = np.sort(self.rng.uniform(t_prev_ms, now_ms, m)).astype(np.int64)
        for s in range(0, m, self.batch_size):
            k = len(self.msg_sent_s)
            sl = slice(s, s + self.batch_size)
            ids = [f"L{k}-{i}" for i in range(len(ts[sl]))]
            value = batch_avro(LATENCY_MODEL, VERSION, ids, ts[sl], clients[sl], preds[sl],
                               X[sl], S[sl])
            self.msg_sent_s.append(time.time())
            self.bytes_sent += len(value)
            sender.send(topic, value, LATENCY_MODEL.encode())
        self.sent += m
        return m

    def preload(self, sender: Sender, topic: str, n: int, end_ms: float,
                tick_s: float = 0.5) -> tuple[int, int]:
        """About ``n`` events of the whole run (every phase) stamped at ``rate`` up to
        ``end_ms``, as fast as the producer takes them; returns (events, messages)."""
        span_ms = 1000.0 * n / self.rate
        per_tick = max(int(self.rate * tick_s), 1)
        t_prev, sent, before = end_ms - span_ms, 0, len(self.msg_sent_s)
        while sent < n:
            k = min(per_tick, n - sent)
            t_now = t_prev + 1000.0 * k / self.rate
            sent += self.tick(sender, topic, t_prev, sent / n, k, now_ms=t_now)
            t_prev = t_now
        sender.flush()
        return sent, len(self.msg_sent_s) - before


def live_clients(rate: float) -> int:
    """Benign clients of the live traffic at ``rate`` events/s (~20 queries/s each)."""
    return max(N_CLIENTS, int(rate / 20))


def live_settings(clients: int) -> dict[str, str]:
    """Worker settings of the live-traffic runs, sized to their clients as an operator
    would: the extraction table holds every active client (the next power of two at or
    above 1.5x their number, unless ``INFERWATCH_EXTRACTION_CAPACITY`` is set). With
    fewer slots than active clients, a client's history is evicted between its queries
    and the extraction attacker goes unseen."""
    capacity = 1 << max(int(math.ceil(math.log2(1.5 * clients))), 13)
    return {"INFERWATCH_COOLDOWN_MS": LIVE_COOLDOWN_MS,
            "INFERWATCH_EXTRACTION_CAPACITY": os.environ.get(
                "INFERWATCH_EXTRACTION_CAPACITY", str(capacity))}


def run_mix_capacity(broker: EmbeddedBroker, size: Size, nominal_rate: float, clients: int,
                     out: Path, run_id: str, workdir: Path, profile: bool) -> Case:
    """The most events/s the worker sustains on the latency run's traffic mix.

    The same generator as the live run (fresh benign rows from ``clients`` clients,
    floods, the extraction attacker and the drift, all phases in order), stamped at
    ``nominal_rate`` in the past and pre-loaded; then a worker with the live run's
    settings drains it and is timed like the other throughput cases.
    """
    topics = topic_set(f"{run_id}-mix")
    ensure_topics(broker.bootstrap, list(topics.values()))
    mix = LiveTraffic(nominal_rate, size.batch_size, size.latency_s, seed=12,
                      n_clients=clients)
    baselines = workdir / "baselines-mix"
    save_profiles([mix.profile()], baselines)
    sender = Sender(broker.bootstrap)
    t = time.monotonic()
    try:
        events, messages = mix.preload(sender, topics["batches"], size.mix_events,
                                       end_ms=time.time() * 1000.0 - 60_000.0)
    finally:
        sender.close()
    case = Case("live_mix", f"live mix ({clients:,} clients, batch msgs)", "batch", events,
                messages=messages, bytes=mix.bytes_sent)
    say(f"{case.label}: pre-loaded {events:,} events in {messages:,} messages in "
        f"{time.monotonic() - t:.1f} s")
    return run_case(case, broker, topics, baselines, size, out, run_id, profile,
                    **live_settings(clients))


def run_latency(broker: EmbeddedBroker, size: Size, rate: float, out: Path, run_id: str,
                workdir: Path, clients: int | None = None) -> dict[str, Any]:
    """The live run (see the module docstring)."""
    topics = topic_set(f"{run_id}-latency")
    ensure_topics(broker.bootstrap, list(topics.values()))
    live = LiveTraffic(rate, size.batch_size, size.latency_s, n_clients=clients)
    baselines = workdir / "baselines-latency"
    save_profiles([live.profile()], baselines)
    port = free_port()
    log_path = out / "e2e-logs" / "latency.log"
    env = worker_env(broker.url, topics, f"{run_id}-latency", baselines, port,
                     **live_settings(live.n_clients))
    reader = IncidentReader(broker.bootstrap, topics["incidents"])
    sender = Sender(broker.bootstrap, linger_ms=1)
    load = [round(os.getloadavg()[0], 2)]
    proc = start_process([sys.executable, "-m", "streams.cli", "run"], env, log_path)
    say(f"latency: worker starting; warm-up, then {size.latency_s:g} s at {rate:,.0f} events/s")
    try:
        reader.start()
        # Warm-up: one second of benign traffic, then wait until the worker has processed it.
        t_prev = time.time() * 1000.0 - 1000.0
        warm = live.tick(sender, topics["batches"], t_prev, None, int(rate))
        sender.flush()
        watch(proc, port, EVENTS_METRIC, warm, size, log_path, "latency warm-up")
        reader.ready.wait(30)
        if reader.error is not None:
            raise RuntimeError(f"incident reader failed: {reader.error!r}")
        say(f"latency: worker caught up ({warm:,} warm-up events); live traffic")
        t0 = time.time()
        pids = (proc.pid, os.getpid(), *([broker.proc.pid] if broker.proc else []))
        cpu0 = process_cpu_seconds(proc.pid)
        ours0, busy0 = [process_cpu_seconds(p) for p in pids], machine_busy_seconds()
        t_prev = t0 * 1000.0
        planned = 0.0
        sent_live = 0
        while (now := time.time()) - t0 < size.latency_s:
            planned = rate * (now - t0)
            n = int(min(planned - sent_live, rate * size.tick_s * 5))
            if n > 0:
                live.tick(sender, topics["batches"], t_prev, (now - t0) / size.latency_s, n)
                sent_live += n
                t_prev = now * 1000.0
            time.sleep(max(0.0, size.tick_s - (time.time() - now)))
        duration = time.time() - t0
        cpu1 = process_cpu_seconds(proc.pid)
        ours1, busy1 = [process_cpu_seconds(p) for p in pids], machine_busy_seconds()
        other_cpu = None
        if None not in (*ours0, *ours1, busy0, busy1):
            other = (busy1 - busy0) - sum(b - a for a, b in zip(ours0, ours1, strict=True))
            other_cpu = round(max(other, 0.0) / duration, 2)
        load.append(round(os.getloadavg()[0], 2))
        sender.flush()
        total = live.sent
        say(f"latency: sent {total - warm:,} live events in {duration:.1f} s "
            f"({(total - warm) / duration:,.0f}/s); waiting for the worker to catch up")
        t_sent = time.monotonic()
        prog = watch(proc, port, EVENTS_METRIC, total, size, log_path, "latency catch-up")
        catch_up_s = time.monotonic() - t_sent
        final = prog.samples[-1][1]
        time.sleep(1.0)  # last incident records reach the reader
    finally:
        reader.stop.set()
        stop_process(proc)
        sender.close()
        reader.join(10)
    from streams.records import decode_incident

    e2i, e2p, p2a, s2i = [], [], [], []
    slowest: list[tuple[float, str, str, float]] = []
    statuses: Counter = Counter()
    detectors: Counter = Counter()
    warmup_records = 0
    for arrival_s, create_ms, value in reader.items:
        rec = decode_incident(value)
        statuses[rec["status"]] += 1
        if rec["status"] not in ("open", "update"):
            continue
        ev_ms = float(rec["timestamp_ms"])
        if ev_ms < t0 * 1000.0:
            # caused by the warm-up second, sent before the worker had started: its delay
            # is the worker's start-up, not the live latency
            warmup_records += 1
            continue
        detectors[rec["detector"]] += 1
        e2i.append(arrival_s * 1000.0 - ev_ms)
        slowest.append((round(e2i[-1], 1), rec["detector"], rec["status"],
                        round(arrival_s - t0, 2)))
        e2p.append(create_ms - ev_ms)
        p2a.append(arrival_s * 1000.0 - create_ms)
        trig = str(rec.get("trigger_event_id") or "")
        if trig.startswith("L") and "-" in trig:
            k = int(trig[1:].split("-", 1)[0])
            if k < len(live.msg_sent_s):
                s2i.append((arrival_s - live.msg_sent_s[k]) * 1000.0)
    res = {
        "target_rate": rate,
        "achieved_rate": round((live.sent - warm) / duration, 1),
        "seconds": round(duration, 2),
        "events": live.sent - warm,
        "warmup_events": warm,
        "clients": live.n_clients,
        "batch_size": size.batch_size,
        "tick_s": size.tick_s,
        "cooldown_ms": int(LIVE_COOLDOWN_MS),
        "extraction_capacity": int(live_settings(live.n_clients)[
            "INFERWATCH_EXTRACTION_CAPACITY"]),
        "catch_up_s": round(catch_up_s, 2),
        "worker_cpu_share": (round((cpu1 - cpu0) / duration, 3)
                             if cpu0 is not None and cpu1 is not None else None),
        "loadavg": load,
        "other_cpu": other_cpu,
        "step_seconds_sum": final.get("inferwatch_step_seconds_sum"),
        #: checkpoints during the run, and how long processing stopped for them in all
        "checkpoints": int(final.get("inferwatch_checkpoint_pause_seconds_count", 0)),
        "checkpoint_pause_s": round(final.get("inferwatch_checkpoint_pause_seconds_sum",
                                              0.0), 3),
        "checkpoint_seconds": round(final.get("inferwatch_checkpoint_seconds_sum", 0.0), 3),
        #: steps by duration (upper bound of the bucket, seconds): a slow step shows here
        "steps_by_seconds": _buckets(final, "inferwatch_step_seconds"),
        "records_by_status": dict(statuses),
        "records_by_detector": dict(detectors),
        #: open/update records of warm-up events (left out of the latencies: that traffic
        #: was sent before the worker started)
        "warmup_records": warmup_records,
        "event_to_incident_ms": _dist(e2i),
        "event_to_publish_ms": _dist(e2p),
        "publish_to_arrival_ms": _dist(p2a),
        "send_to_incident_ms": _dist(s2i),
        "producer": sender.kind,
        #: the ten slowest records: (event-to-incident ms, detector, status, arrival s
        #: after the live traffic started), to tell a slow detector from a stalled worker
        "slowest": sorted(slowest, reverse=True)[:10],
    }
    d = res["event_to_incident_ms"]
    res["note"] = (f"{d['n']} open/update records" + (
        f" ({warmup_records} of warm-up traffic left out)" if warmup_records else "") + (
        "" if d["n"] >= 100 else f"; with n={d['n']} the p99 is close to the maximum")
        + ("" if d["p99"] is not None or d["n"] == 0 else "; too few records for a p99"))
    say(f"latency: {d['n']} incident records; event-to-incident p50 {d['p50']} ms, "
        f"p99 {d['p99']} ms")
    return res


# -- report -------------------------------------------------------------------------------
def _fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(rep: dict[str, Any]) -> str:
    lines = [
        f"# End-to-end benchmark ({rep['size']})",
        "",
        f"Embedded Tansu broker on loopback, one worker process, {rep['machine']['cpus']} "
        f"CPU(s), d={D} features, {N_CLIENTS} clients. Rate = events processed after the "
        "first metrics scrape that saw any, over the time to the scrape that saw all "
        "(startup and group join excluded). Pipeline-only = the same events over the time "
        "inside `Pipeline.step` (detect, encode; each fetch is decoded ahead, beside the "
        "previous step); the rest of the wall time is waiting for the next fetch and "
        "publishing. Worker CPU = CPU seconds of the worker process (all threads) per "
        "wall second. Other processes = CPU the machine spent outside the worker, the broker "
        "and the benchmark itself during the measurement: well above 0 means the numbers "
        f"were taken on a shared, busy machine. Producer: {rep.get('producer', '?')}; commit "
        f"{rep.get('git_commit') or 'unknown'}.",
        "",
        "| case | events | messages | MB | events/s | pipeline-only events/s "
        "| wall time in Pipeline.step | worker CPU (cores) | events per worker CPU-s "
        "| other processes (cores) | incident records |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in rep["cases"]:
        recs = sum(c["incident_records"].values()) if c["incident_records"] else None
        lines.append(
            f"| {c['name']} | {c['events']:,} | {c['messages']:,} | {c['bytes'] / 1e6:,.1f} "
            f"| {c['events_per_s']:,.0f} | {_fmt(c['pipeline_events_per_s'])} "
            f"| {_fmt(c['pipeline_share'], '.0%')} | {_fmt(c['cpu_share'], '.2f')} "
            f"| {_fmt(c['events_per_cpu_s'])} | {_fmt(c['other_cpu'], '.2f')} "
            f"| {_fmt(recs, 'd')} |"
        )
    r = rep.get("ratio_single_json_vs_naive")
    rc = rep.get("ratio_single_json_vs_naive_per_cpu_s")
    if rep["cases"]:
        lines += ["", f"inferwatch single-event JSON / naive Faust agent: "
                  f"**{_fmt(r, '.2f')}x** in events/s, {_fmt(rc, '.2f')}x in events per "
                  "worker CPU-second."]
    else:  # --latency-only
        lines = [f"# End-to-end latency run ({rep['size']}, --latency-only)"]
    lat = rep.get("latency")
    if lat:
        lines += [
            "",
            f"## Latency (live batch traffic, target {lat['target_rate']:,.0f} events/s, "
            f"achieved {lat['achieved_rate']:,.0f}/s for {lat['seconds']:g} s, "
            f"{lat['batch_size']:,} events/message, tick {lat['tick_s'] * 1000:g} ms)",
            "",
            f"{lat['clients']:,} benign clients. Maximum the worker sustained on this "
            f"traffic (live_mix case): {_fmt(lat.get('max_rate_on_this_traffic'))} "
            f"events/s; live rate: {lat.get('rate_rule', '-')}.",
            "",
            "| latency | n | p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, label in (("event_to_incident_ms", "event -> incident (arrival)"),
                           ("send_to_incident_ms", "message sent -> incident"),
                           ("event_to_publish_ms", "event -> worker publish"),
                           ("publish_to_arrival_ms", "worker publish -> arrival")):
            d = lat[key]
            lines.append(f"| {label} | {d['n']} | {_fmt(d['p50'], '.1f')} "
                         f"| {_fmt(d['p99'], '.1f')} | {_fmt(d['max'], '.1f')} |")
        lines += ["", f"Records: {lat['records_by_detector']}; {lat['note']}. Worker CPU "
                  f"{_fmt(lat['worker_cpu_share'], '.2f')} cores during the live traffic, "
                  f"other processes {_fmt(lat['other_cpu'], '.2f')} cores; caught up "
                  f"{lat['catch_up_s']:g} s after the last send. Checkpoints: "
                  f"{lat.get('checkpoints', '-')}, processing paused "
                  f"{_fmt(lat.get('checkpoint_pause_s'), '.3f')} s for them in all "
                  f"(written in {_fmt(lat.get('checkpoint_seconds'), '.2f')} s). Worker "
                  f"steps by duration (s, upper bucket bound: count): "
                  f"{lat.get('steps_by_seconds', '-')}."]
    return "\n".join(lines) + "\n"


def plot(rep: dict[str, Any], path: Path) -> None:
    """Bar chart: events/s per case (and events per worker CPU-second), log scale."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    cases = rep["cases"]
    x = np.arange(len(cases))
    rates = [c["events_per_s"] for c in cases]
    per_cpu = [c.get("events_per_cpu_s") or 0.0 for c in cases]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    colors = ["#888888" if c["name"].startswith("naive") else "#2a6f97" for c in cases]
    bars = ax.bar(x - 0.2, rates, 0.4, color=colors, label="events/s (wall clock)")
    ax.bar(x + 0.2, per_cpu, 0.4, color=colors, alpha=0.45, hatch="//",
           label="events per worker CPU-second")
    ax.set_yscale("log")
    low = min(v for v in rates + per_cpu if v > 0)
    ax.set_ylim(bottom=10 ** math.floor(math.log10(low / 2)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xticks(x, [c["label"] for c in cases], fontsize=8)
    ax.set_ylabel("events (log scale)")
    ax.set_title(f"inferwatch end-to-end through the broker ({rep['size']}, d={D}, "
                 f"{rep['machine']['cpus']} CPUs)", fontsize=10)
    for b, r in zip(bars, rates, strict=True):
        ax.annotate(f"{r:,.0f}", (b.get_x() + b.get_width() / 2, r), ha="center",
                    va="bottom", fontsize=8)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _git_commit() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, cwd=Path(__file__).resolve().parents[1])
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


# -- main ---------------------------------------------------------------------------------
def run(size: Size, size_name: str, out: Path, profile: bool = False) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    run_id = f"e2e{int(time.time()) % 100000}"
    workdir = Path(tempfile.mkdtemp(prefix="inferwatch-e2e-"))
    baselines = workdir / "baselines"
    save_profiles([reference_profile()], baselines)
    cases = [
        Case("single_json", "single-event JSON", "json", size.single_events),
        Case("single_avro", "single-event Avro", "avro", size.single_events),
        Case("batch", f"batch ({size.batch_size:,}/msg)", "batch", size.batch_events),
    ]
    naive = Case("naive_json", "naive Faust agent (JSON)", "json", size.single_events)
    broker = EmbeddedBroker(log_path=str(out / "e2e-logs" / "broker.log"))
    (out / "e2e-logs").mkdir(parents=True, exist_ok=True)
    rep: dict[str, Any] = {
        "benchmark": "e2e",
        "size": size_name,
        "config": asdict(size),
        "d": D,
        "clients": N_CLIENTS,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "inferwatch_env": {k: v for k, v in os.environ.items() if k.startswith("INFERWATCH_")},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": _git_commit(),
    }
    broker.start()
    say(f"embedded broker on {broker.bootstrap}; work dir {workdir}")
    try:
        sender = Sender(broker.bootstrap)
        rep["producer"] = sender.kind
        done: list[Case] = []
        json_topics: dict[str, str] = {}
        for i, case in enumerate(cases):
            topics = topic_set(f"{run_id}-{case.name}")
            ensure_topics(broker.bootstrap, list(topics.values()))
            t = time.monotonic()
            block = traffic(case.events, seed=10 + i)
            case.messages, case.bytes = preload(sender, case.encoding, block, topics,
                                                size.batch_size)
            del block
            say(f"{case.label}: pre-loaded {case.events:,} events in {case.messages:,} "
                f"messages ({case.bytes / 1e6:,.1f} MB) in {time.monotonic() - t:.1f} s "
                f"via {sender.kind}")
            if case.name == "single_json":
                json_topics = topics
            done.append(run_case(case, broker, topics, baselines, size, out, run_id, profile))
        sender.close()
        naive.messages, naive.bytes = done[0].messages, done[0].bytes
        done.append(run_case(naive, broker, json_topics, baselines, size, out, run_id, profile))
        rep["cases"] = [asdict(c) for c in done]
        rep["ratio_single_json_vs_naive"] = round(done[0].events_per_s / naive.events_per_s, 3)
        if done[0].events_per_cpu_s and naive.events_per_cpu_s:
            rep["ratio_single_json_vs_naive_per_cpu_s"] = round(
                done[0].events_per_cpu_s / naive.events_per_cpu_s, 3)
        # The latency run's traffic is heavier per event than the batch case (thousands of
        # clients, floods, an extraction attacker, drift): its maximum is measured on that
        # traffic itself, and the live run goes at half of it.
        nominal = size.latency_rate or done[2].events_per_s / 2
        clients = live_clients(nominal)
        mix = run_mix_capacity(broker, size, nominal, clients, out, run_id, workdir, profile)
        done.append(mix)
        rep["cases"] = [asdict(c) for c in done]
        rate = size.latency_rate or mix.events_per_s / 2
        rep["latency"] = run_latency(broker, size, rate, out, run_id, workdir, clients)
        rep["latency"]["max_rate_on_this_traffic"] = round(mix.events_per_s, 1)
        rep["latency"]["rate_rule"] = (
            "fixed by --latency-rate or the size" if size.latency_rate else
            "half the live-mix case's measured maximum (same generator and clients)")
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    rep["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return rep


def run_batch_only(size: Size, size_name: str, out: Path, repeat: int,
                   profile: bool = False) -> dict[str, Any]:
    """The batch case alone (``--batch-only``), ``repeat`` times on the same pre-loaded
    topic, each by a fresh worker reading it from the start.

    What an operator tuning the batch path runs between changes: on a shared machine the
    spread of the repeats says how far one figure can be trusted, and two commits are
    compared by their medians.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e-logs").mkdir(parents=True, exist_ok=True)
    run_id = f"e2eb{int(time.time()) % 100000}"
    workdir = Path(tempfile.mkdtemp(prefix="inferwatch-e2e-"))
    baselines = workdir / "baselines"
    save_profiles([reference_profile()], baselines)
    broker = EmbeddedBroker(log_path=str(out / "e2e-logs" / "broker.log"))
    rep: dict[str, Any] = {
        "benchmark": "e2e", "mode": "batch-only", "size": size_name, "config": asdict(size),
        "d": D, "clients": N_CLIENTS, "repeat": repeat,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "inferwatch_env": {k: v for k, v in os.environ.items() if k.startswith("INFERWATCH_")},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": _git_commit(),
    }
    broker.start()
    try:
        sender = Sender(broker.bootstrap)
        rep["producer"] = sender.kind
        topics = topic_set(f"{run_id}-batch")
        ensure_topics(broker.bootstrap, list(topics.values()))
        block = traffic(size.batch_events, seed=12)  # the full run's batch traffic
        messages, nbytes = preload(sender, "batch", block, topics, size.batch_size)
        del block
        sender.close()
        say(f"batch: pre-loaded {size.batch_events:,} events in {messages:,} messages")
        cases = []
        for r in range(repeat):
            case = Case("batch", f"batch ({size.batch_size:,}/msg), run {r + 1}/{repeat}",
                        "batch", size.batch_events, messages=messages, bytes=nbytes)
            cases.append(run_case(case, broker, topics, baselines, size, out,
                                  f"{run_id}r{r}", profile))
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    rep["cases"] = [asdict(c) for c in cases]
    rates = sorted(c.events_per_s for c in cases)
    rep["median_events_per_s"] = round(float(np.median(rates)), 1)
    rep["spread_events_per_s"] = [round(rates[0], 1), round(rates[-1], 1)]
    rep["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return rep


def batch_markdown(rep: dict[str, Any]) -> str:
    """The ``--batch-only`` report: every repeat and their median."""
    lines = [
        f"# End-to-end batch case ({rep['size']}, --batch-only, {rep['repeat']} run(s))",
        "",
        f"Commit {rep.get('git_commit') or 'unknown'}; {rep['machine']['cpus']} CPU(s); the "
        "same pre-loaded topic read from the start by a fresh worker each run.",
        "",
        "| run | events/s | pipeline-only events/s | wall time in Pipeline.step "
        "| worker CPU (cores) | kernel seconds |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for i, c in enumerate(rep["cases"], 1):
        ks = ", ".join(f"{k} {v:.2f}" for k, v in sorted(c["kernel_seconds"].items()))
        lines.append(f"| {i} | {c['events_per_s']:,.0f} | {_fmt(c['pipeline_events_per_s'])} "
                     f"| {_fmt(c['pipeline_share'], '.0%')} | {_fmt(c['cpu_share'], '.2f')} "
                     f"| {ks} |")
    lo, hi = rep["spread_events_per_s"]
    lines += ["", f"Median **{rep['median_events_per_s']:,.0f}** events/s "
              f"(runs {lo:,.0f} - {hi:,.0f})."]
    return "\n".join(lines) + "\n"


def run_latency_only(size: Size, size_name: str, out: Path, rate: float,
                     clients: int | None) -> dict[str, Any]:
    """The live latency run alone (``--latency-only``), e.g. to repeat it at a given rate."""
    out.mkdir(parents=True, exist_ok=True)
    run_id = f"e2l{int(time.time()) % 100000}"
    workdir = Path(tempfile.mkdtemp(prefix="inferwatch-e2e-"))
    broker = EmbeddedBroker(log_path=str(out / "e2e-logs" / "broker.log"))
    (out / "e2e-logs").mkdir(parents=True, exist_ok=True)
    rep: dict[str, Any] = {"benchmark": "e2e latency", "size": size_name, "cases": [],
                           "config": asdict(size), "git_commit": _git_commit(),
                           "machine": {"cpus": os.cpu_count(),
                                       "python": platform.python_version()}}
    broker.start()
    try:
        rep["latency"] = run_latency(broker, size, rate, out, run_id, workdir,
                                     clients or live_clients(rate))
        rep["latency"]["rate_rule"] = "fixed by --latency-rate (--latency-only)"
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rep


def _write_report(out: Path, stem: str, rep: dict[str, Any], md: str) -> None:
    """Write ``stem``.json and ``stem``.md to ``out`` and print the markdown."""
    (out / f"{stem}.json").write_text(json.dumps(rep, indent=1) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(md, encoding="utf-8")
    print(md)
    say(f"wrote {out / f'{stem}.json'}, {out / f'{stem}.md'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.e2e",
        description="End-to-end throughput (single-event JSON, Avro, batch messages, and a "
        "naive Faust agent) and event-to-incident latency through the embedded broker.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes (about two minutes)")
    p.add_argument("--out", default="bench-out", help="output directory (default bench-out/)")
    p.add_argument("--events", type=int, metavar="N",
                   help="events of every throughput case (default: 200,000 single-event, "
                   "5,000,000 batch; quick: 5,000 / 100,000)")
    p.add_argument("--latency-rate", type=float, metavar="EV_S",
                   help="events/s of the live latency run (default: half the live-mix "
                   "case's rate; quick: 5,000)")
    p.add_argument("--latency-clients", type=int, metavar="N",
                   help="benign clients of the live run (default: rate / 20)")
    p.add_argument("--latency-only", action="store_true",
                   help="only the live latency run, at --latency-rate (no throughput cases)")
    p.add_argument("--latency-seconds", type=float, metavar="S",
                   help="duration of the live latency run (default 20; quick 10)")
    p.add_argument("--batch-only", action="store_true",
                   help="only the batch case (no single-event, naive or latency runs), "
                   "--repeat times; writes e2e-batch.json and e2e-batch.md")
    p.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="runs of the --batch-only case (default 3; the report gives each "
                   "and the median)")
    p.add_argument("--profile", action="store_true",
                   help="sample each worker with py-spy (if installed); hottest frames "
                   "go to the report, raw profiles to DIR/e2e-profile-*.txt")
    args = p.parse_args(argv)
    size_name = "quick" if args.quick else "full"
    size = SIZES[size_name]
    if args.events:
        size = replace(size, single_events=args.events, batch_events=args.events)
        size_name += f" (--events {args.events})"
    if args.latency_rate:
        size = replace(size, latency_rate=args.latency_rate)
    if args.latency_seconds:
        size = replace(size, latency_s=args.latency_seconds)
    out = Path(args.out)
    if args.latency_only:
        if not args.latency_rate:
            p.error("--latency-only needs --latency-rate")
        rep = run_latency_only(size, size_name, out, args.latency_rate,
                               args.latency_clients)
        _write_report(out, "e2e-latency", rep, markdown(rep))
        return 0
    if args.batch_only:
        if args.repeat < 1:
            p.error("--repeat must be at least 1")
        rep = run_batch_only(size, size_name, out, args.repeat, profile=args.profile)
        _write_report(out, "e2e-batch", rep, batch_markdown(rep))
        return 0
    rep = run(size, size_name, out, profile=args.profile)
    (out / "e2e.json").write_text(json.dumps(rep, indent=1) + "\n", encoding="utf-8")
    md = markdown(rep)
    (out / "e2e.md").write_text(md, encoding="utf-8")
    plot(rep, out / "e2e.png")
    print(md)
    say(f"wrote {out / 'e2e.json'}, {out / 'e2e.md'}, {out / 'e2e.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
