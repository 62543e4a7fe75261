"""Checkpoint encoding without a broker: sparse tables, digests, chunks."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from streams.checkpoint import (
    CheckpointError,
    compress_state,
    decode_state,
    encode_state,
    join_chunks,
    pickle_state,
    spare_buffers,
    split_chunks,
)


def test_sparse_tables_round_trip_exactly() -> None:
    rng = np.random.default_rng(0)
    table = np.zeros((4096, 16, 8), dtype=np.float32)
    table[[3, 700, 4095]] = rng.normal(size=(3, 16, 8))
    table[5, 0, 0] = -0.0  # bytewise non-zero: must survive
    table[6, 1, 1] = np.nan
    keys = np.zeros(1 << 15, dtype=np.int64)
    keys[[1, 9]] = [-(1 << 62), 42]
    odd = np.zeros((5000, 3), dtype=np.int8)[:, ::2]  # not contiguous, rows of 2 bytes
    odd[17] = [1, -1]
    dense = rng.normal(size=(300, 300))  # mostly used: pickled as usual
    state = {"table": table, "keys": keys, "odd": odd, "dense": dense, "alias": keys}
    blob = encode_state(state, key=None)
    back = decode_state(blob)
    for name in ("table", "keys", "odd", "dense"):
        assert back[name].dtype == state[name].dtype and back[name].shape == state[name].shape
        assert back[name].tobytes() == np.ascontiguousarray(state[name]).tobytes()
    assert back["alias"] is back["keys"]  # shared arrays stay shared
    sparse_only = encode_state({k: state[k] for k in ("table", "keys", "odd")}, key=None)
    assert len(sparse_only) < 20_000  # 2.4 MB of mostly empty tables


def test_pickled_state_is_a_snapshot_that_compresses_like_one_pickle() -> None:
    big = np.arange(1 << 18, dtype=np.float64)  # large: handed to the pickler zero-copy
    state = {"big": big, "small": [1, 2, 3]}
    parts = pickle_state(state)
    big[:] = -1.0  # the detectors go on right after the pause
    blob = compress_state(parts)
    assert zlib.decompress(blob) == b"".join(parts)  # one zlib stream of one pickle
    back = decode_state(blob)
    assert back["big"][-1] == (1 << 18) - 1 and back["small"] == [1, 2, 3]


def test_digest_and_chunks() -> None:
    blob = encode_state({"x": 1}, key=None) * 50
    chunks = split_chunks(blob, "id", key=b"k", chunk_bytes=100)
    assert len(chunks) > 1
    values = [v for v, _ in chunks]
    assert join_chunks(values, chunks[-1][1], key=b"k") == blob
    with pytest.raises(CheckpointError):
        join_chunks(values, chunks[-1][1], key=b"other")
    with pytest.raises(CheckpointError):
        join_chunks(values[:-1], chunks[-1][1], key=b"k")


def test_a_snapshot_copies_into_the_last_ones_buffers() -> None:
    big = np.arange(1 << 18, dtype=np.float64)
    spare = spare_buffers(pickle_state({"big": big}))
    assert spare, "the large array should be copied into a numpy buffer"
    reused = next(iter(spare.values()))[0]
    big[:] = 7.0
    second = pickle_state({"big": big}, spare)
    assert any(part is reused for part in second)  # no fresh memory for the snapshot
    assert (decode_state(compress_state(second))["big"] == 7.0).all()
