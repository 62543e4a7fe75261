"""Tamper evidence: incident records of each partition form a hash chain.

Every record carries ``chain = {"seq", "prev", "hash"}``: ``hash`` is SHA-256 over the
previous hash and the record's canonical JSON (sorted keys, without ``chain``), ``prev``
the hash of the record before it on the same partition, ``seq`` its position. Deleting,
reordering or altering a record breaks the next link; :func:`verify` finds the first
break. The worker resumes each chain from the last record on the topic at start-up.

>>> c = HashChain()
>>> a = c.link({"x": 1}, 0); b = c.link({"x": 2}, 0)
>>> b["chain"]["prev"] == a["chain"]["hash"], verify_records([(0, 0, a), (0, 1, b)])
(True, [])
>>> b["x"] = 3
>>> verify_records([(0, 0, a), (0, 1, b)])[0]["problem"]
'record altered (hash mismatch)'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

GENESIS = "0" * 64


def record_hash(prev: str, record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "chain"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev + canon).encode()).hexdigest()


class HashChain:
    """Per-partition chain state of the publisher."""

    def __init__(self) -> None:
        self.heads: dict[int, tuple[int, str]] = {}

    def resume(self, partition: int, seq: int, head: str) -> None:
        self.heads[partition] = (seq, head)

    def link(self, record: dict[str, Any], partition: int) -> dict[str, Any]:
        seq, prev = self.heads.get(partition, (-1, GENESIS))
        h = record_hash(prev, record)
        record["chain"] = {"seq": seq + 1, "prev": prev, "hash": h}
        self.heads[partition] = (seq + 1, h)
        return record


def verify_records(records: Iterable[tuple[int, int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Check ``(partition, offset, record)`` in offset order; return the problems found."""
    problems: list[dict[str, Any]] = []
    heads: dict[int, tuple[int, str]] = {}
    for partition, offset, rec in records:
        chain = rec.get("chain")
        if not isinstance(chain, dict):
            problems.append({"partition": partition, "offset": offset,
                             "problem": "record has no chain link"})
            continue
        if partition not in heads and chain["seq"] != 0:
            problems.append({"partition": partition, "offset": offset,
                             "problem": f"chain starts at seq {chain['seq']}, not 0: earlier "
                                        "records were deleted (or expired by retention)"})
        seq, prev = heads.get(partition, (chain["seq"] - 1, chain["prev"]))
        if chain["seq"] != seq + 1:
            problems.append({"partition": partition, "offset": offset,
                             "problem": f"missing record(s): seq {seq + 1} expected, "
                                        f"found {chain['seq']}"})
        elif chain["prev"] != prev:
            problems.append({"partition": partition, "offset": offset,
                             "problem": "link to the previous record broken"})
        if record_hash(chain["prev"], rec) != chain["hash"]:
            problems.append({"partition": partition, "offset": offset,
                             "problem": "record altered (hash mismatch)"})
        heads[partition] = (chain["seq"], chain["hash"])
    return problems


def read_chain(bootstrap: str, topic: str, timeout_s: float = 30.0,
               **client_config: Any) -> list[tuple[int, int, dict[str, Any]]]:
    """Every record of ``topic``, per partition in offset order (undecodable ones as {})."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    from streams.records import decode_incident

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, **client_config)
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise ValueError(f"topic {topic!r} does not exist on {bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        from streams.checkpoint import PartitionReader

        reader = PartitionReader(bootstrap, **client_config)
        try:  # the true log ends (ListOffsets can fall short on the embedded broker)
            ends = {tp: reader.end(tp.topic, tp.partition) for tp in tps}
        finally:
            reader.close()
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[tuple[int, int, dict[str, Any]]] = []
        seen = {tp: 0 for tp in tps}
        deadline = time.monotonic() + timeout_s
        while any(seen[tp] < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=500).items():
                for m in msgs:
                    try:
                        rec = decode_incident(m.value)
                    except Exception:
                        rec = {}
                    out.append((tp.partition, m.offset, rec))
                    seen[tp] = m.offset + 1
    finally:
        consumer.close()
    return sorted(out, key=lambda r: (r[0], r[1]))
