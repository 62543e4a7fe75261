"""The fast InferenceBatch reader decides exactly like the generic (fastavro) one.

Properties over :class:`schemas.codec.Decoder` with and without the fast path: the same
blocks (column by column, client keys included) for valid batches of any shape and text,
arrays split into several Avro blocks included; the same rejects (code, reason, rows) for
corrupted ones. No broker: pure functions.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas.codec as codec
from detectors.client_table import block_client_keys, client_hashes
from schemas import wire
from schemas.batch_scan import ScannedBatch
from schemas.codec import Decoder, DecodeResult
from schemas.encoders import batch_avro
from schemas.registry import SCHEMA_IDS

PROPS = settings(deadline=None, database=None, max_examples=150,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ids = st.text(st.characters(codec="utf-8"), min_size=0, max_size=12)
ascii_ids = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
                    max_size=12)


def _zigzag(v: int) -> bytes:
    u = (v << 1) ^ (v >> 63)
    out = bytearray()
    while True:
        b = u & 0x7F
        u >>= 7
        if u:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _blob(b: bytes) -> bytes:
    return _zigzag(len(b)) + b


def _array(items: list[bytes], cuts: list[int], sized: bool) -> bytes:
    """An Avro array written as several blocks (``cuts`` item counts), optionally with the
    negative-count-plus-byte-size block form."""
    out, i = bytearray(), 0
    for c in [*cuts, len(items)]:
        part = items[i: i + c] if c else []
        i += len(part)
        if not part:
            continue
        body = b"".join(part)
        out += _zigzag(-len(part)) + _zigzag(len(body)) if sized else _zigzag(len(part))
        out += body
    return bytes(out + _zigzag(0))


def _utf8(x: str | bytes) -> bytes:
    return x if isinstance(x, bytes) else x.encode()


def _hand_batch(event_ids, ts, clients, preds, X, conf, cuts=(), sized=False,
                raw_ts: list[bytes] | None = None) -> bytes:
    """A batch written byte by byte: strings may be raw bytes, timestamps raw varints."""
    n, d = X.shape
    cuts = list(cuts)
    body = (_blob(b"m") + _blob(b"1")
            + _array([_blob(_utf8(e)) for e in event_ids], cuts, sized)
            + _array(raw_ts or [_zigzag(t) for t in ts], cuts, sized)
            + _array([_blob(_utf8(c)) for c in clients], cuts, sized)
            + _array([_blob(_utf8(p)) for p in preds], cuts, sized)
            + _zigzag(d) + _blob(X.astype("<f4").tobytes())
            + _zigzag(0) + _blob(b"") + _blob(conf.astype("<f4").tobytes()))
    return struct.pack(">bI", 0, SCHEMA_IDS["inference_batch"]) + body


def _generic(values: list[bytes]) -> DecodeResult:
    """The same decode with the fast reader switched off."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(codec, "_scanned_fields", lambda raw: None)
        return Decoder(max_message_bytes=1 << 20).decode_batches(values)


def _same(a: DecodeResult, b: DecodeResult) -> None:
    assert [(r.index, r.code, r.reason, r.rows) for r in a.rejects] == \
        [(r.index, r.code, r.reason, r.rows) for r in b.rejects]
    assert len(a.blocks) == len(b.blocks)
    for x, y in zip(a.blocks, b.blocks, strict=True):
        assert (x.model_id, x.model_version) == (y.model_id, y.model_version)
        for col in ("event_id", "client_id", "prediction"):
            assert getattr(x, col).tolist() == getattr(y, col).tolist()
        for col in ("ts", "X", "scores", "confidence"):
            assert np.array_equal(getattr(x, col), getattr(y, col), equal_nan=True)
        assert np.array_equal(block_client_keys(x), block_client_keys(y))


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[str], list[int], list[str], list[str]]:
    n = draw(st.integers(1, 40))
    eids = draw(st.lists(st.one_of(ascii_ids, ids), min_size=n, max_size=n))
    clients = draw(st.lists(st.sampled_from(draw(st.lists(ids, min_size=1, max_size=4))),
                            min_size=n, max_size=n))
    preds = draw(st.lists(st.sampled_from(["0", "1", "cat", "狗"]), min_size=n, max_size=n))
    ts = draw(st.lists(st.integers(-5, 2**42), min_size=n, max_size=n))
    return eids, ts, clients, preds


@PROPS
@given(batches(), st.integers(1, 5), st.booleans(), st.integers(0, 2**31))
def test_valid_batches_decode_alike(b, d: int,
                                    with_conf: bool, seed: int) -> None:
    eids, ts, clients, preds = b
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(len(eids), d)).astype(np.float32)
    S = rng.dirichlet(np.ones(3), len(eids)).astype(np.float32)
    conf = S.max(axis=1) if with_conf else None
    raw = batch_avro("m", "1", eids, ts, clients, preds, X, S, conf)
    _same(Decoder(max_message_bytes=1 << 20).decode_batches([raw]), _generic([raw]))


@PROPS
@given(batches(), st.lists(st.integers(0, 40), max_size=4), st.booleans())
def test_arrays_in_several_blocks_decode_alike(b,
                                               cuts: list[int], sized: bool) -> None:
    eids, ts, clients, preds = b
    X = np.arange(len(eids) * 2, dtype=np.float32).reshape(-1, 2)
    raw = _hand_batch(eids, ts, clients, preds, X, np.full(len(eids), 0.5), cuts, sized)
    fast = Decoder(max_message_bytes=1 << 20).decode_batches([raw])
    _same(fast, _generic([raw]))


@PROPS
@given(st.integers(0, 2**31), st.integers(1, 6),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
       st.integers(-1, 10**6))
def test_corrupted_batches_are_rejected_alike(seed: int,
                                              n: int, flips, cut: int) -> None:
    rng = np.random.default_rng(seed)
    raw = bytearray(batch_avro("m", "1", [f"e{i}" for i in range(n)], list(range(n)),
                               ["c1", "c2"] * n, ["0"] * n,
                               rng.normal(size=(n, 2)).astype(np.float32),
                               rng.dirichlet(np.ones(2), n).astype(np.float32)))
    for pos, byte in flips:
        raw[5 + pos % max(len(raw) - 5, 1)] = byte
    if cut >= 0:
        raw = raw[: 5 + cut % len(raw)]
    values = [bytes(raw)]
    _same(Decoder(max_message_bytes=1 << 20).decode_batches(values),
          _generic(values))


def test_the_fast_reader_takes_well_formed_batches() -> None:
    """The fast path really runs (the properties above would pass if it never did)."""
    raw = batch_avro("m", "1", ["a", "b", "c"], [1, 2, 3], ["x", "y", "x"], ["0", "1", "0"],
                     np.zeros((3, 2), np.float32), confidence=np.ones(3, np.float32))
    assert codec._scanned_fields(raw) is not None
    sc = ScannedBatch.scan(raw)
    assert sc is not None and sc.n == 3
    values, group = sc.distinct("client")
    assert values.tolist() == ["x", "y"] and group.tolist() == [0, 1, 0]
    block = Decoder().decode_batches([raw]).blocks[0]
    assert block.client_keys is not None  # keys came from the distinct ids
    assert block.client_keys.tolist() == client_hashes("m", "1", block.client_id).tolist()
    assert block.event_id.dtype.kind == "U"  # no Python object per event id


@pytest.mark.parametrize("mutate", [
    lambda r: r + b"\x00",  # trailing byte
    lambda r: r[:-1],  # truncated confidence
    lambda r: r[:5] + b"\x01" + r[6:],  # model id length made negative
    lambda r: r[:1] + struct.pack(">I", SCHEMA_IDS["inference_event"]) + r[5:],
])
def test_malformed_bodies_go_to_the_generic_reader(mutate) -> None:
    raw = batch_avro("m", "1", ["a"], [1], ["x"], ["0"], np.zeros((1, 2), np.float32),
                     confidence=np.ones(1, np.float32))
    bad = mutate(raw)
    assert codec._scanned_fields(bad) is None
    result = Decoder().decode_batches([bad])
    assert not result.blocks and result.rejects[0].code in {"bad_avro", "bad_shape"}
    assert wire.is_framed(bad)


@pytest.mark.parametrize("case", ["prediction_not_utf8", "client_not_utf8",
                                  "timestamp_beyond_64_bits", "one_long_event_id"])
def test_edge_bodies_decide_like_the_generic_reader(case: str) -> None:
    """Regressions found by review: each used to take the fast path and decide otherwise
    (or, for the long id, allocate ids x longest id x 4 bytes)."""
    n = 50
    eids: list = [f"e{i}" for i in range(n)]
    clients: list = ["c"] * n
    preds: list = ["0"] * n
    raw_ts = None
    if case == "prediction_not_utf8":
        preds[7] = b"\xff"
    elif case == "client_not_utf8":
        clients[3] = b"\xed\xa0\x80"  # an encoded surrogate
    elif case == "timestamp_beyond_64_bits":
        raw_ts = [_zigzag(1)] * (n - 1) + [b"\xff" * 9 + b"\x02"]
    else:
        eids[0] = "x" * 20_000
    raw = _hand_batch(eids, [1] * n, clients, preds, np.zeros((n, 2), np.float32),
                      np.full(n, 0.5), raw_ts=raw_ts)
    assert codec._scanned_fields(raw) is None
    _same(Decoder(max_message_bytes=1 << 20).decode_batches([raw]), _generic([raw]))
