"""The single-event decoder's fast paths give exactly what the event-by-event path gives.

:meth:`Decoder.decode_events` parses with orjson (or the JSON scanner) and validates groups
of events column by column (:meth:`Decoder._all_valid`), falling back to
``json.loads`` and :meth:`Decoder._check_fields` per event. These properties pin that
the shortcuts never change an outcome: same blocks, same rejects (index, code, reason).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.synthetic import block_to_events, make_block
from schemas import codec
from schemas.codec import Decoder, ModelShape, _Invalid
from schemas.encoders import event_json
from tests.schemas.test_fuzz_codec import (
    FUZZ,
    MAX_BYTES,
    MODEL,
    WRONG,
    D,
    K,
    assert_same_blocks,
    encoded,
    event_adversarial,
    valid_events,
)


class SlowDecoder(Decoder):
    """The reference: every event parsed with ``json.loads`` and checked on its own."""

    def _all_valid(self, evs: list[dict[str, Any]]) -> bool:
        return False

    def _parse_one(self, raw: bytes | None) -> dict[str, Any]:
        if raw is not None and 0 < len(raw) <= self.max_message_bytes \
                and not codec.wire.is_framed(raw):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _Invalid("bad_encoding", "message is neither UTF-8 JSON nor Avro") \
                    from None
            try:
                ev = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise _Invalid("bad_json", f"invalid JSON: {exc}") from None
            if not isinstance(ev, dict):
                raise _Invalid("bad_json",
                               f"JSON value is a {type(ev).__name__}, not an object")
            return ev
        return super()._parse_one(raw)


def both(seeded: bool = True) -> tuple[Decoder, Decoder]:
    shapes = {(MODEL, "1"): ModelShape(D, K)} if seeded else {}
    return (Decoder(shapes, max_message_bytes=MAX_BYTES),
            SlowDecoder(shapes, max_message_bytes=MAX_BYTES))


def _reasons(rejects: list[codec.Reject]) -> list[tuple]:
    # fastavro's messages may name a buffer object by its address
    return [(r.index, r.code, re.sub(r" at 0x[0-9a-f]+", "", r.reason), r.rows)
            for r in rejects]


def assert_same_result(msgs: list[bytes], seeded: bool = True) -> None:
    fast, slow = both(seeded)
    a, b = fast.decode_events(msgs), slow.decode_events(msgs)
    assert _reasons(a.rejects) == _reasons(b.rejects)
    assert_same_blocks(a.blocks, b.blocks)
    assert fast.shapes == slow.shapes


@settings(FUZZ, max_examples=300)
@given(st.lists(event_adversarial(), min_size=1, max_size=30), st.booleans())
def test_fast_paths_decide_like_the_event_by_event_path(msgs: list[bytes],
                                                        seeded: bool) -> None:
    assert_same_result(msgs, seeded)


@settings(FUZZ, max_examples=200)
@given(st.lists(encoded(valid_events()), min_size=1, max_size=40),
       st.sampled_from(sorted(WRONG)), st.data())
def test_one_wrong_field_in_a_group_is_found(msgs: list[bytes], field: str,
                                             data: st.DataObject) -> None:
    """One event with a wrong (or missing) field among valid ones: only it is rejected."""
    i = data.draw(st.integers(0, len(msgs) - 1))
    ev = json.loads(msgs[i]) if msgs[i][:1] == b"{" else \
        block_to_events(make_block(n=1, d=D, seed=i, model_id=MODEL))[0]
    ev = {**ev, "model_id": MODEL, "model_version": "1"}
    if data.draw(st.booleans()):
        ev.pop(field, None)
    else:
        ev[field] = data.draw(st.sampled_from(WRONG[field]))
    msgs[i] = json.dumps(ev).encode()
    assert_same_result(msgs)


@pytest.mark.parametrize("text", [
    '{"a": 1}', ' {"a": 1}', '{"a": 1} ', '{"a": 1}\n', '{"a": 1} {"b": 2}', '{"a": 1},',
    '{"a": 1}]', '{"a": [1', '{', '{}', '{"a": NaN}', '{"a": 1}\x00', '[{"a": 1}]',
    '{"a": "\\ud800"}', '\ufeff{"a": 1}',
])
def test_scanner_shortcut_agrees_with_json_loads(text: str) -> None:
    """Whitespace, trailing data, truncation: the shortcut accepts only what json.loads
    returns as one object, and any other text gets json.loads's own verdict and reason."""
    assert_same_result([text.encode()], seeded=False)


@pytest.mark.parametrize("field,value", [
    ("timestamp_ms", 2**64), ("timestamp_ms", -(2**63) - 1), ("prediction", 2**64),
    ("prediction", -(2**63) - 1), ("event_id", 2**70), ("client_id", -(2**64)),
    ("features", [2**64, -(2**63) - 1, 0.5, 10**30]), ("confidence", 2**64),
])
def test_integers_beyond_64_bits_decide_like_json_loads(field: str, value: Any) -> None:
    """orjson reads such integers as floats; the decoder's verdict and reason must not move."""
    ev = block_to_events(make_block(n=1, d=D, seed=3, model_id=MODEL))[0]
    ev = {**ev, "model_id": MODEL, "model_version": "1"}
    good = [event_json({**ev, "event_id": f"ok{j}"}) for j in range(3)]
    assert_same_result([*good, json.dumps({**ev, field: value}).encode()])
    assert_same_result([json.dumps({**ev, field: value}).encode()], seeded=False)


def test_all_ints_and_mixed_numbers_are_accepted() -> None:
    """Integer features (and a huge one that is rejected) take the per-element path."""
    ev = block_to_events(make_block(n=1, d=D, seed=1, model_id=MODEL))[0]
    msgs = [event_json({**ev, "event_id": f"e{j}", "features": [j, 1.5, -2, 0]})
            for j in range(5)]
    msgs.append(event_json({**ev, "event_id": "big", "features": [10**400, 0, 0, 0]}))
    assert_same_result(msgs)
    res = Decoder({(MODEL, "1"): ModelShape(D, K)}).decode_events(msgs)
    assert res.n_events == 5 and [r.index for r in res.rejects] == [5]


def test_groups_bound_what_is_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation groups close after CHECK_GROUP_BYTES of input (here: every message)."""
    calls: list[int] = []
    real = Decoder._all_valid

    def spy(self: Decoder, evs: list[dict[str, Any]]) -> bool:
        calls.append(len(evs))
        return real(self, evs)

    monkeypatch.setattr(Decoder, "_all_valid", spy)
    monkeypatch.setattr(codec, "CHECK_GROUP_BYTES", 1)
    msgs = [event_json(e) for e in block_to_events(make_block(n=7, d=D, seed=2,
                                                              model_id=MODEL))]
    assert Decoder().decode_events(msgs).n_events == 7
    assert calls == [1] * 7


def test_a_valid_group_takes_the_column_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typical traffic never runs the per-event checks."""
    def boom(self: Decoder, ev: dict[str, Any]) -> None:
        raise AssertionError("per-event check ran")

    monkeypatch.setattr(Decoder, "_check_fields", boom)
    block = make_block(n=300, d=D, seed=3, model_id=MODEL)
    res = Decoder().decode_events([event_json(e) for e in block_to_events(block)])
    assert res.n_events == 300 and not res.rejects
    np.testing.assert_array_equal(res.blocks[0].X, block.X)
