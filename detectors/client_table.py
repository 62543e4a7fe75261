"""Bounded per-client state: a fixed-capacity open-addressing table keyed by 64-bit hashes.

Client ids are attacker-controlled and unbounded, so per-client state lives in
preallocated arrays: a lookup probes at most ``PROBES`` slots and, when all are taken
by other clients, evicts the least recently seen of them. Memory is
``capacity x bytes_per_slot`` whatever clients do (see :mod:`detectors.flood`).
"""

from __future__ import annotations

import hashlib
import threading

import numba
import numpy as np

from detectors.block import EventBlock

PROBES = 16
#: 2^64 / golden ratio as a signed int64: Fibonacci hashing spreads nearby keys.
GOLDEN = -7046029254386353131


#: Most (model, client) -> key entries kept between blocks. Client ids are attacker
#: controlled, so the cache is cleared when it would grow past this; 65,536 entries of
#: 16-character ids measured 8.5 MB (dict slot, key int and the id string kept alive) and
#: cover far more than the few thousand clients per model where per-block hashing cost
#: a tenth of the worker's step.
KEY_CACHE_ENTRIES = 1 << 16

#: ``(model_id, model_version) -> {client id: key}``: a pure function's results, so it
#: is neither checkpointed nor shared between processes (each rebuilds it in one block).
_key_cache: dict[tuple[str, str], dict[object, int]] = {}
_key_cache_size = 0
#: Held while the cache grows or is cleared: the worker's decode thread and its step
#: thread both compute keys (a read of the cache needs no lock).
_key_cache_lock = threading.RLock()


def clear_key_cache() -> None:
    """Forget every cached client key (benchmarks and tests start cold with it)."""
    global _key_cache_size
    with _key_cache_lock:
        _key_cache.clear()
        _key_cache_size = 0


def _hash_key(prefix: bytes, client: object) -> int:
    """The positive 64-bit key of one client (blake2b of model prefix and id; never 0)."""
    return int.from_bytes(hashlib.blake2b(prefix + str(client).encode(), digest_size=8)
                          .digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF or 1


def client_hashes(model_id: str, model_version: str, clients: np.ndarray) -> np.ndarray:
    """Stable positive 64-bit keys for (model, client), identical across processes.

    Each distinct client is hashed once and remembered across blocks in a bounded cache
    (``KEY_CACHE_ENTRIES``): a model's regular clients recur in every block, and hashing
    them again each time was a tenth of the worker's step time with a few thousand
    clients. Per event it costs one dict lookup.
    """
    values = clients.tolist()
    key = (model_id, model_version)
    cache = _key_cache.get(key)
    if cache is not None:
        try:  # the usual case once a model's clients are known: no hashing at all
            return np.fromiter(map(cache.__getitem__, values), dtype=np.int64,
                               count=len(values))
        except KeyError:
            pass
    with _key_cache_lock:
        return _hash_new(key, values)


def _hash_new(key: tuple[str, str], values: list) -> np.ndarray:
    """:func:`client_hashes` of ids not all cached yet (called under the cache lock)."""
    global _key_cache_size
    model_id, model_version = key
    cache = _key_cache.get(key)
    if cache is None:
        cache = _key_cache[key] = {}
    distinct = dict.fromkeys(values)
    new = [c for c in distinct if c not in cache]
    if _key_cache_size + len(new) > KEY_CACHE_ENTRIES:
        clear_key_cache()
        cache = _key_cache[key] = {}
        new = list(distinct)
    prefix = f"{model_id}\x1f{model_version}\x1f".encode()
    if len(new) > KEY_CACHE_ENTRIES:  # one block with more distinct ids than the cap
        cache = {c: _hash_key(prefix, c) for c in new}
    else:
        for c in new:
            cache[c] = _hash_key(prefix, c)
        _key_cache_size += len(new)
    return np.fromiter(map(cache.__getitem__, values), dtype=np.int64, count=len(values))


def block_client_keys(block: EventBlock) -> np.ndarray:
    """:func:`client_hashes` of a block, computed once and shared by its detectors."""
    if block.client_keys is None:
        block.client_keys = client_hashes(block.model_id, block.model_version, block.client_id)
    return block.client_keys


@numba.njit(cache=True, nogil=True)
def find_slot(keys, last_seen, key, ts):
    """Slot of ``key``; claims an empty one or evicts the stalest in the probe run.

    Returns ``(slot, is_new)``. ``is_new`` means the caller must reset the slot's state.
    """
    cap = keys.shape[0]
    start = (key * GOLDEN) & (cap - 1)
    victim = start
    oldest = last_seen[start]
    for p in range(PROBES):
        s = (start + p) & (cap - 1)
        k = keys[s]
        if k == key:
            return s, False
        if k == 0:
            keys[s] = key
            return s, True
        if last_seen[s] < oldest:
            oldest = last_seen[s]
            victim = s
    keys[victim] = key
    return victim, True
