"""A step given its messages decoded ahead (the bulk ingest's decode thread) publishes
exactly what it publishes when it decodes them itself, dead letters included."""

from __future__ import annotations

import json

from benchmarks.synthetic import block_to_events, make_block
from detectors.baseline import Profile
from schemas.encoders import event_json
from streams.pipeline import Message, Pipeline


def _messages() -> tuple[list[Message], Profile]:
    prof = Profile.build(make_block(n=5000, seed=1))
    benign = make_block(n=2000, seed=2)
    flood = make_block(n=1200, seed=3, n_clients=1, interval_ms=1,
                       start_ms=int(benign.ts[-1]) + 5, id_prefix="fl")
    events = block_to_events(benign) + block_to_events(flood)
    msgs = [Message("inference-events", i % 2, i // 2, event_json(e))
            for i, e in enumerate(events)]
    msgs[10] = Message("inference-events", 0, 5, b"{not json")
    msgs[11] = Message("inference-events", 1, 5, None)
    return msgs, prof


def _letters(letters: list) -> list[dict]:
    """Dead letters without the time they were written."""
    return [{k: v for k, v in json.loads(value).items() if k != "rejected_at_ms"}
            for value, _ in letters]


def test_decoded_ahead_equals_decoded_in_the_step() -> None:
    msgs, prof = _messages()
    inline = Pipeline("inference-batches", profiles={prof.key: prof})
    ahead = Pipeline("inference-batches", profiles={prof.key: prof})
    a = inline.step(msgs)
    decoded = ahead.decode(msgs)
    assert ahead.counters["messages_in"] == 0  # decoding alone counts nothing
    b = ahead.step(msgs, decoded)
    key = [(r["incident_id"], r["status"], r["count"]) for r in a.incidents]
    assert key and key == [(r["incident_id"], r["status"], r["count"]) for r in b.incidents]
    assert _letters(a.dead_letters) == _letters(b.dead_letters)
    assert len(b.dead_letters) == 2
    assert inline.counters == ahead.counters
    assert inline.next_offsets == ahead.next_offsets


def test_decoding_ahead_prepares_the_blocks_of_models_already_known() -> None:
    msgs, prof = _messages()
    head, tail = msgs[:400], msgs[400:]
    inline = Pipeline("inference-batches", profiles={prof.key: prof})
    ahead = Pipeline("inference-batches", profiles={prof.key: prof})
    inline.step(head)
    ahead.step(head)
    decoded = ahead.decode(tail)
    blocks = [b for run in decoded for _, b in run.local]
    assert blocks and all(b.derived and "query_features" in b.derived for b in blocks)
    a, b = inline.step(tail), ahead.step(tail, decoded)
    key = [(r["incident_id"], r["status"], r["count"]) for r in a.incidents]
    assert key and key == [(r["incident_id"], r["status"], r["count"]) for r in b.incidents]
    assert inline.counters == ahead.counters
