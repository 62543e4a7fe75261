"""Why a Faust table restored on the embedded broker loses the tail of its changelog.

Issue #6 reported two things seen with a Faust ``Table`` on the embedded Tansu broker:
a restarted worker waited about 100 s before recovering, and the table restored from its
changelog came back with one update missing (999 of 1000 for one key). This probe runs
the pieces down and prints what it finds. It starts and stops its own
:class:`~streams.broker.EmbeddedBroker`::

    python -m benchmarks.changelog_probe                     # about 1-2 minutes
    python -m benchmarks.changelog_probe --default-timeouts  # + Faust's 60 s timeouts, ~3.5 min

What it shows:

1. **The broker's end offset is wrong.** Records are produced in batches of known sizes
   and read back with a plain ``assign`` + ``seek_to_beginning`` consumer. Every record is
   on the partition and a Fetch reports the right high watermark (``highwater()`` after a
   poll), but ListOffsets(LATEST) -- what ``end_offsets()`` asks, in kafka-python and
   aiokafka alike, either isolation level -- returns the *base offset of the last batch
   plus one*, not the log end offset. It is right only when the last batch held one
   record.
2. **Faust trusts that number.** ``faust/tables/recovery.py`` takes the changelog
   highwater from ``consumer.end_offsets()`` and stops recovery at ``highwater - 1``
   (``_build_highwaters``: ``tp: value - 1``; ``need_recovery``: ``highwater - offset >
   0``). With the end offset too small, recovery declares itself complete at the *first*
   record of the last batch; the rest of that batch is never applied (it waits in the
   recovery buffer, which is applied only when full or at the next recovery's end). A
   counter table of 1000 increments is restored as the value written at that offset:
   999 when the last batch held two records, less with a longer producer linger. The
   changelog itself holds all 1000 updates: nothing is lost on the broker or by Faust's
   producer, and a control run that patches Faust's highwater lookup to use the Fetch
   high watermark restores 1000.
3. **Recovery time.** Tansu numbers a new group's first generation 0; aiokafka sends
   LeaveGroup on stop only when ``generation > 0``, so the first worker of a group never
   leaves it, even when stopped gracefully, and its successor waits for the old member's
   session to expire (plus Tansu's join delay, about half the timeout). With Faust's
   defaults (60 s session and rebalance timeouts) that is the ~110 s seen in the issue;
   with 3 s timeouts recovery takes a few seconds, after a graceful stop or ``kill -9``.
4. **Reading "the last checkpoint" of a partition.** ``seek(end_offsets() - 1)`` lands on
   the first record of the last batch, not the last record. Reading from there up to the
   Fetch high watermark and keeping the highest offset is correct. The broker also takes
   records far beyond Kafka's default 1 MiB ``message.max.bytes``, so size limits are
   not exercised by tests on the embedded broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from streams.broker import EmbeddedBroker

APP_ID = "changelog-probe"
EVENTS_TOPIC = "changelog-probe-events"
CHANGELOG_TOPIC = f"{APP_ID}-counts-changelog"
N_EVENTS = 1000
JOIN_TOPIC = "probe-join"
TUNED = {"broker_session_timeout": 3.0, "broker_rebalance_timeout": 3.0,
         "broker_heartbeat_interval": 0.5}


# --------------------------------------------------------------------------- helpers


def _consumer(bootstrap: str, **kw: Any) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                         enable_auto_commit=False, **kw)


def scan(bootstrap: str, topic: str, partition: int = 0) -> dict[str, Any]:
    """All records of one partition (assign + seek_to_beginning), with both end markers."""
    c = _consumer(bootstrap)
    tp = TopicPartition(topic, partition)
    c.assign([tp])
    c.seek_to_beginning(tp)
    list_offsets_end = c.end_offsets([tp])[tp]
    records: list[Any] = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 1.0:
        got = [r for rs in c.poll(200).values() for r in rs]
        if got:
            records += got
            idle_since = time.monotonic()
        hw = c.highwater(tp)
        if hw is not None and c.position(tp) >= hw:
            break
    fetch_hw = c.highwater(tp)
    c.close()
    return {"records": len(records),
            "last_offset": records[-1].offset if records else None,
            "last_value": records[-1].value if records else None,
            "end_offsets": list_offsets_end, "fetch_highwater": fetch_hw}


def read_last(bootstrap: str, topic: str, partition: int = 0,
              timeout_s: float = 10.0) -> tuple[int, bytes | None] | None:
    """The last record of a partition, without trusting ListOffsets(LATEST).

    Seek to ``end_offsets() - 1`` (at or before the last batch's first record, since the
    broker may report the last batch's base offset + 1), then read until the position
    reaches the high watermark of a Fetch response and keep the highest offset.
    """
    c = _consumer(bootstrap)
    tp = TopicPartition(topic, partition)
    c.assign([tp])
    end = c.end_offsets([tp])[tp]
    if end == 0:
        c.close()
        return None
    c.seek(tp, max(end - 1, 0))
    last = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for r in (r for rs in c.poll(200).values() for r in rs):
            if last is None or r.offset > last[0]:
                last = (r.offset, r.value)
        hw = c.highwater(tp)
        if hw is not None and c.position(tp) >= hw:
            break
    c.close()
    return last


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, partitions, 1)])
    admin.close()


# --------------------------------------------------------------- part 1: the broker


def probe_end_offsets(bootstrap: str) -> None:
    print("\n== 1. ListOffsets(LATEST) vs Fetch high watermark vs records present")
    topic = "probe-end-offsets"
    create_topic(bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    total = 0
    print(f"{'batch':>6} {'records':>8} {'last offset':>12} {'end_offsets()':>14}"
          f" {'Fetch highwater':>16}")
    for size in (1, 5, 3, 1, 10):
        for i in range(size):
            producer.send(topic, value=b"%d" % (total + i), partition=0)
        producer.flush()  # one flush per group -> one batch of `size` records
        total += size
        s = scan(bootstrap, topic)
        flag = "" if s["end_offsets"] == total else "   <-- wrong (last batch base + 1)"
        print(f"{size:>6} {s['records']:>8} {s['last_offset']:>12} {s['end_offsets']:>14}"
              f" {s['fetch_highwater']:>16}{flag}")
    producer.close()
    print("aiokafka:", asyncio.run(_aiokafka_end_offsets(bootstrap, topic)))


async def _aiokafka_end_offsets(bootstrap: str, topic: str) -> str:
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as ATP

    tp = ATP(topic, 0)
    out = []
    for iso in ("read_uncommitted", "read_committed"):
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, isolation_level=iso)
        await c.start()
        c.assign([tp])
        end = (await c.end_offsets([tp]))[tp]
        await c.seek_to_beginning(tp)
        while True:
            batch = await c.getmany(timeout_ms=500)
            if not batch:
                break
        out.append(f"{iso}: end_offsets={end} highwater()={c.highwater(tp)} "
                   f"last_stable_offset()={c.last_stable_offset(tp)}")
        await c.stop()
    return "; ".join(out)


# ------------------------------------------------------ part 2: Faust table recovery


def worker_main() -> None:
    """One Faust worker (run as a subprocess): counts events into a table, reports it."""
    import faust

    tuned = os.environ["PROBE_TUNED"] == "1"
    app = faust.App(
        APP_ID, broker=os.environ["PROBE_BROKER"], store="memory://", web_enabled=False,
        topic_partitions=1, consumer_auto_offset_reset="earliest",
        datadir=os.environ["PROBE_DATADIR"],
        # a linger makes the changelog's last batch hold several records, as a busy
        # worker's does; with one record per batch the broker's end offset is right
        producer_linger=0.2,
        **(TUNED if tuned else {}),
    )
    events = app.topic(EVENTS_TOPIC, partitions=1, key_serializer="raw",
                       value_serializer="raw")
    counts = app.Table("counts", default=int, partitions=1)

    if os.environ.get("PROBE_FIX_HW") == "1":
        _patch_faust_highwaters(os.environ["PROBE_BROKER"].split("://", 1)[1])

    @app.agent(events)
    async def count(stream: Any) -> None:
        async for _ in stream:
            counts["k"] += 1

    last: dict[str, Any] = {}

    @app.timer(0.1)
    async def report() -> None:
        cur = {"ready": app.tables.recovery.completed.is_set(), "value": counts.data.get("k")}
        if cur != last:
            last.clear()
            last.update(cur)
            print("PROBE " + json.dumps(cur), flush=True)

    sys.argv = [sys.argv[0], "worker", "-l", "info", "--without-web"]
    app.main()


def _patch_faust_highwaters(bootstrap: str) -> None:
    """Control: give Faust's recovery the Fetch high watermark instead of ListOffsets."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    def true_ends(tps: list[Any]) -> dict[Any, int]:
        c = _consumer(bootstrap)
        ktps = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        c.assign(ktps)
        ends = c.end_offsets(ktps)
        for ktp in ktps:
            c.seek(ktp, max(ends[ktp] - 1, 0))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            ends[k] > 0 and c.highwater(k) is None for k in ktps
        ):
            c.poll(200)
        out = {tp: (c.highwater(k) if c.highwater(k) is not None else ends[k])
               for tp, k in zip(tps, ktps, strict=True)}
        c.close()
        return out

    async def _highwaters(self: Any, partitions: Any) -> dict[Any, int]:
        return await asyncio.to_thread(true_ends, list(partitions))

    faust_aiokafka.AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]


@dataclass
class Worker:
    """A worker subprocess whose ``PROBE`` lines and log are collected."""

    name: str
    env: dict[str, str]
    log_dir: Path
    reports: list[dict[str, Any]] = field(default_factory=list)
    generation: int | None = None

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.changelog_probe", "--worker"],
            env=self.env, cwd=str(Path(__file__).resolve().parent.parent),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.log_path = self.log_dir / f"worker-{self.name}.log"
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log_path, "w") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                if "PROBE {" in line:
                    d = json.loads(line.split("PROBE ", 1)[1])
                    d["at"] = time.monotonic()
                    self.reports.append(d)
                m = re.search(r"Joined group .*\(generation (-?\d+)\)", line)
                if m:
                    self.generation = int(m.group(1))

    def wait(self, pred: Any, timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for d in list(self.reports):
                if pred(d):
                    return d
            if self.proc.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def stop(self, kill: bool = False) -> float:
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return time.monotonic() - t0

    def highwater_logged(self) -> str | None:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        m = re.search(rf"\| {re.escape(CHANGELOG_TOPIC)} \| 0\s+\| (-?\d+)\s+\|", text)
        return m.group(1) if m else None


def recover(name: str, env: dict[str, str], log_dir: Path, timeout_s: float,
            **extra: str) -> tuple[Worker, float | None, int | None]:
    w = Worker(name, {**env, **extra}, log_dir)
    d = w.wait(lambda d: d["ready"], timeout_s)
    if d is None:
        return w, None, None
    time.sleep(2.0)  # give any late changelog events the chance to be applied
    return w, d["at"] - w.started, w.reports[-1]["value"]


def probe_faust(broker: EmbeddedBroker, tuned: bool, log_dir: Path) -> None:
    label = "3 s session/rebalance timeouts" if tuned else "Faust default timeouts (60 s)"
    print(f"\n== 2. Faust table recovery, {label}")
    bootstrap = broker.bootstrap
    app_events = EVENTS_TOPIC
    try:
        create_topic(bootstrap, app_events)
    except Exception:  # noqa: BLE001 - already created by the previous round
        pass
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(N_EVENTS):
        producer.send(app_events, key=b"k", value=b"%d" % i, partition=0)
    producer.flush()
    producer.close()
    env = {**os.environ, "PROBE_BROKER": broker.url, "PROBE_TUNED": "1" if tuned else "0",
           "PROBE_DATADIR": str(log_dir / f"data-{int(tuned)}")}
    wait_s = 60.0 if tuned else 200.0

    a = Worker("A", env, log_dir)
    if a.wait(lambda d: d["value"] == N_EVENTS, wait_s) is None:
        print(f"worker A never counted {N_EVENTS}; see {a.log_path}")
        a.stop()
        return
    time.sleep(3.5)  # let Faust commit the input offsets (commit interval 2.8 s)
    print(f"worker A counted {N_EVENTS}; its group generation was {a.generation}")
    a.stop()
    s = scan(bootstrap, CHANGELOG_TOPIC)
    print(f"changelog on the broker: {s['records']} records, last offset {s['last_offset']}"
          f" value {s['last_value']!r}; end_offsets()={s['end_offsets']},"
          f" Fetch highwater={s['fetch_highwater']}")
    print(f"  -> Faust will read highwater = end_offsets() - 1 = {s['end_offsets'] - 1},"
          f" the last record is at {s['last_offset']}")

    b, t_b, v_b = recover("B", env, log_dir, wait_s)
    print(f"B (after graceful stop of A): ready after {_fmt(t_b)}, table value {v_b}"
          f" (Faust logged highwater {b.highwater_logged()})")
    b.stop()
    if not tuned:
        return
    c, t_c, v_c = recover("C", env, log_dir, wait_s, PROBE_FIX_HW="1")
    print(f"C (control, Fetch high watermark as highwater): ready after {_fmt(t_c)},"
          f" table value {v_c} (highwater {c.highwater_logged()})")
    c.stop(kill=True)
    d, t_d, v_d = recover("D", env, log_dir, wait_s)
    print(f"D (after kill -9 of C): ready after {_fmt(t_d)}, table value {v_d}")
    d.stop()


def _fmt(t: float | None) -> str:
    return "never (timed out)" if t is None else f"{t:.1f} s"


# ------------------------------------------------------- part 4: group join on Tansu


async def _join(bootstrap: str, group: str, session_s: float) -> tuple[Any, float, int]:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(JOIN_TOPIC, bootstrap_servers=bootstrap, group_id=group,
                         session_timeout_ms=int(session_s * 1000),
                         rebalance_timeout_ms=int(session_s * 1000),
                         heartbeat_interval_ms=int(session_s * 200))
    t0 = time.monotonic()
    await c.start()
    while not c.assignment():
        await asyncio.sleep(0.05)
    return c, time.monotonic() - t0, c._coordinator.generation


async def _group_timings(bootstrap: str, session_s: float) -> None:
    group = f"probe-join-{session_s:g}"
    prev = None
    for i in range(3):
        c, dt, gen = await _join(bootstrap, group, session_s)
        after = "fresh group" if prev is None else f"after graceful stop of a gen-{prev} member"
        print(f"  session {session_s:g} s, member {i + 1} ({after}): assigned after {dt:.1f} s,"
              f" generation {gen}")
        prev = gen
        await c.stop()  # aiokafka sends LeaveGroup only if generation > 0


def probe_group_join(bootstrap: str) -> None:
    print("\n== 4. Group join on the embedded broker (aiokafka consumers, graceful stops)")
    create_topic(bootstrap, JOIN_TOPIC)
    asyncio.run(_group_timings(bootstrap, 3.0))


# --------------------------------------------------------- part 3: checkpoint reading


def probe_checkpoint_reading(bootstrap: str) -> None:
    print("\n== 3. Reading the last checkpoint of a partition")
    topic = "probe-checkpoints"
    create_topic(bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=100,
                             max_request_size=32 * 2**20)
    for i in range(5):  # five checkpoints sent together -> one batch
        producer.send(topic, key=b"p0", value=b"checkpoint-%d" % i, partition=0)
    producer.flush()
    c = _consumer(bootstrap)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    end = c.end_offsets([tp])[tp]
    c.seek(tp, end - 1)
    first = next((r for rs in c.poll(2000).values() for r in rs), None)
    c.close()
    print(f"5 records (offsets 0-4) in one batch: end_offsets()={end}; naive"
          f" seek(end-1) first record = offset {first and first.offset}"
          f" {first and first.value!r}")
    print(f"read_last() (seek end-1, read to Fetch highwater, keep max offset):"
          f" {read_last(bootstrap, topic)}")

    big = os.urandom(8 * 2**20)
    t0 = time.monotonic()
    md = producer.send(topic, key=b"p0", value=big, partition=0).get(timeout=60)
    t_send = time.monotonic() - t0
    last = read_last(bootstrap, topic)
    ok = last is not None and last[0] == md.offset and last[1] == big
    print(f"8 MiB checkpoint (kafka-python max_request_size raised): accepted at offset"
          f" {md.offset} in {t_send:.1f} s, read back intact: {ok}. Apache Kafka's default"
          " message.max.bytes is ~1 MiB: there it needs max.message.bytes on the topic")
    producer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--default-timeouts", action="store_true",
                    help="also measure recovery with Faust's default 60 s timeouts (~2.5 min more)")
    args = ap.parse_args()
    if args.worker:
        worker_main()
        return
    t0 = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix="changelog-probe-"))
    with EmbeddedBroker() as broker:
        probe_end_offsets(broker.bootstrap)
        probe_faust(broker, tuned=True, log_dir=log_dir)
        probe_checkpoint_reading(broker.bootstrap)
        probe_group_join(broker.bootstrap)
    if args.default_timeouts:
        with EmbeddedBroker() as broker:  # a fresh broker: a new group, generation 0 again
            probe_faust(broker, tuned=False, log_dir=log_dir)
    print(f"\nworker logs in {log_dir}; total {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
