"""Fast path for ``InferenceBatch`` bodies: one compiled pass, no Python object per event.

A generic Avro reader builds a Python string for every event id, client id and
prediction of a batch: at a few thousand events per message that was a quarter of the
worker's time. :func:`scan_batch` walks the body once (numba) and returns where every
field lies in the message; the caller then builds numpy columns from those positions:
event ids as a fixed-width string array (ASCII ids, one vectorised copy), client ids and
predictions from their *distinct* values (a model has few of either per batch), each
decoded to a Python string once.

It accepts only well-formed bodies: anything it cannot read (truncated varints, lengths
past the end, trailing bytes, over-long arrays) gives a non-zero status, and the caller
then decodes the message with the generic reader, whose error message becomes the
dead-letter reason. So the fast path never changes which messages are accepted or why
one is rejected, only how fast the accepted ones are read.

>>> import numpy as np
>>> from schemas.encoders import batch_avro
>>> raw = batch_avro("m", "1", ["e1", "e2"], [5, 6], ["c", "c"], ["a", "b"],
...                  np.zeros((2, 3), np.float32), confidence=np.ones(2, np.float32))
>>> s = ScannedBatch.scan(raw)
>>> s.n, s.n_features, s.event_ids().tolist(), s.strings("client").tolist()
(2, 3, ['e1', 'e2'], ['c', 'c'])
"""

from __future__ import annotations

import numba
import numpy as np

#: Positions in the header array that :func:`scan_batch` returns.
H_MODEL, H_VERSION, H_FEATURES, H_SCORES, H_CONF = 0, 2, 4, 6, 8  # (offset, length) pairs
H_D, H_K, H_STATUS = 10, 11, 12
HEADER_SLOTS = 13
#: Column index of each string array in the offset arrays.
STRING_COLUMNS = {"event": 0, "client": 1, "prediction": 2}


@numba.njit(cache=True, nogil=True)
def _long(buf, pos, end):
    """Zigzag varint at ``pos``: ``(value, next position)``, next position -1 when bad."""
    shift = 0
    acc = np.uint64(0)
    while True:
        if pos >= end or shift > 63:
            return 0, -1
        b = buf[pos]
        pos += 1
        if shift == 63 and b > 1:  # beyond 64 bits: the generic reader decides
            return 0, -1
        acc |= np.uint64(b & 0x7F) << np.uint64(shift)
        if b < 0x80:
            break
        shift += 7
    v = np.int64(acc >> np.uint64(1)) ^ -np.int64(acc & np.uint64(1))
    return v, pos


@numba.njit(cache=True, nogil=True)
def _blob(buf, pos, end):
    """A string or bytes field: ``(offset, length, next position)``; -1 when bad."""
    n, pos = _long(buf, pos, end)
    if pos < 0 or n < 0 or pos + n > end:
        return 0, 0, -1
    return pos, n, pos + n


@numba.njit(cache=True, nogil=True)
def _array_count(buf, pos, end):
    """Item count of an array block: ``(count, next position)``; skips the block size."""
    count, pos = _long(buf, pos, end)
    if pos < 0:
        return 0, -1
    if count < 0:
        count = -count
        _, pos = _long(buf, pos, end)
    if pos < 0 or count > end - pos:  # every item takes at least one byte
        return 0, -1
    return count, pos


@numba.njit(cache=True, nogil=True)
def _grow(a, need):
    if need <= a.shape[0]:
        return a
    b = np.empty(max(need, 2 * a.shape[0]), dtype=a.dtype)
    b[: a.shape[0]] = a
    return b


@numba.njit(cache=True, nogil=True)
def _string_array(buf, pos, end, offs, lens):
    """Every string of an array field: fills ``offs``/``lens``; ``(count, next pos)``."""
    n = 0
    while True:
        count, pos = _array_count(buf, pos, end)
        if pos < 0:
            return offs, lens, 0, -1
        if count == 0:
            return offs, lens, n, pos
        offs = _grow(offs, n + count)
        lens = _grow(lens, n + count)
        for _ in range(count):
            o, ln, pos = _blob(buf, pos, end)
            if pos < 0:
                return offs, lens, 0, -1
            offs[n] = o
            lens[n] = ln
            n += 1


@numba.njit(cache=True, nogil=True)
def scan_batch(buf, start):
    """Walk an InferenceBatch body from ``start``; return ``(header, offsets, lengths, ts)``.

    ``offsets``/``lengths`` are ``(3, n)``: event ids, client ids, predictions (``n`` the
    number of event ids; the other columns may differ, the caller checks). ``header``
    holds the scalar fields' positions and ``header[H_STATUS]``: 0 for a well-formed
    body, otherwise the step that failed.
    """
    end = buf.shape[0]
    head = np.zeros(HEADER_SLOTS, dtype=np.int64)
    cols_o = [np.empty(0, dtype=np.int64) for _ in range(3)]
    cols_l = [np.empty(0, dtype=np.int64) for _ in range(3)]
    counts = np.zeros(3, dtype=np.int64)
    ts = np.empty(0, dtype=np.int64)
    n_ts = 0
    pos = start
    status = 0
    for field in range(2):  # model_id, model_version
        o, ln, pos = _blob(buf, pos, end)
        if pos < 0:
            status = 1 + field
            break
        head[2 * field] = o
        head[2 * field + 1] = ln
    if status == 0:
        for c in range(4):  # event ids, timestamps, client ids, predictions
            if c == 1:
                while True:
                    count, pos = _array_count(buf, pos, end)
                    if pos < 0 or count == 0:
                        break
                    ts = _grow(ts, n_ts + count)
                    for _ in range(count):
                        v, pos = _long(buf, pos, end)
                        if pos < 0:
                            break
                        ts[n_ts] = v
                        n_ts += 1
                    if pos < 0:
                        break
            else:
                s = 0 if c == 0 else c - 1
                o_arr, l_arr, cnt, pos = _string_array(buf, pos, end, cols_o[s], cols_l[s])
                cols_o[s] = o_arr
                cols_l[s] = l_arr
                counts[s] = cnt
            if pos < 0:
                status = 3 + c
                break
    if status == 0:
        for field in range(3):  # n_features + features, n_classes + scores, confidence
            if field < 2:
                v, pos = _long(buf, pos, end)
                if pos < 0:
                    status = 7 + field
                    break
                head[H_D + field] = v
            o, ln, pos = _blob(buf, pos, end)
            if pos < 0:
                status = 7 + field
                break
            head[H_FEATURES + 2 * field] = o
            head[H_FEATURES + 2 * field + 1] = ln
    if status == 0 and pos != end:
        status = 10  # trailing bytes
    head[H_STATUS] = status
    n = counts[0]
    offs = np.full((3, max(n, 1)), -1, dtype=np.int64)
    lens = np.zeros((3, max(n, 1)), dtype=np.int64)
    if status == 0:
        for s in range(3):
            m = min(counts[s], n)
            offs[s, :m] = cols_o[s][:m]
            lens[s, :m] = cols_l[s][:m]
        if counts[1] != n or counts[2] != n or n_ts != n:
            head[H_STATUS] = 11  # column lengths differ: the generic path words the reason
    return head, offs[:, :n], lens[:, :n], ts[:n_ts]


@numba.njit(cache=True, nogil=True)
def _gather_fixed(buf, offs, lens, width):
    """ASCII strings as an ``(n, width)`` zero-padded matrix of UCS-4 code points (numpy's
    unicode layout); False if a byte is not ASCII."""
    n = offs.shape[0]
    out = np.zeros((n, max(width, 1)), dtype=np.uint32)
    ascii = True
    for i in range(n):
        o = offs[i]
        for j in range(lens[i]):
            b = buf[o + j]
            ascii &= b < 0x80
            out[i, j] = b
    return out, ascii


@numba.njit(cache=True, nogil=True)
def _distinct(buf, offs, lens):
    """Group equal strings: ``(first occurrence of each group, group of every string)``.

    Open addressing on an FNV-1a hash of the bytes, confirmed byte by byte, so two
    different strings never share a group whatever their hashes.
    """
    n = offs.shape[0]
    cap = 16
    while cap < 2 * n:
        cap *= 2
    table = np.full(cap, -1, dtype=np.int64)  # group id per table slot
    first = np.empty(n, dtype=np.int64)
    group = np.empty(n, dtype=np.int64)
    n_groups = 0
    for i in range(n):
        o, ln = offs[i], lens[i]
        h = np.uint64(14695981039346656037)
        for j in range(ln):
            h = (h ^ np.uint64(buf[o + j])) * np.uint64(1099511628211)
        slot = np.int64(h & np.uint64(cap - 1))
        while True:
            g = table[slot]
            if g < 0:
                table[slot] = n_groups
                first[n_groups] = i
                group[i] = n_groups
                n_groups += 1
                break
            f = first[g]
            same = lens[f] == ln
            if same:
                fo = offs[f]
                for j in range(ln):
                    if buf[fo + j] != buf[o + j]:
                        same = False
                        break
            if same:
                group[i] = g
                break
            slot = (slot + 1) & (cap - 1)
    return first[:n_groups], group


class ScannedBatch:
    """Field positions of one well-formed InferenceBatch message, and column builders."""

    __slots__ = ("raw", "buf", "head", "offs", "lens", "ts", "n")

    def __init__(self, raw: bytes, buf: np.ndarray, head: np.ndarray, offs: np.ndarray,
                 lens: np.ndarray, ts: np.ndarray) -> None:
        self.raw, self.buf, self.head = raw, buf, head
        self.offs, self.lens, self.ts = offs, lens, ts
        self.n = int(offs.shape[1])

    @classmethod
    def scan(cls, raw: bytes, start: int = 5) -> ScannedBatch | None:
        """Positions of the body after the ``start``-byte frame; None when not well formed."""
        buf = np.frombuffer(raw, dtype=np.uint8)
        head, offs, lens, ts = scan_batch(buf, start)
        if head[H_STATUS] != 0:
            return None
        return cls(raw, buf, head, offs, lens, ts)

    def _field(self, at: int) -> bytes:
        o, ln = int(self.head[at]), int(self.head[at + 1])
        return self.raw[o: o + ln]

    @property
    def model_id(self) -> str:
        return self._field(H_MODEL).decode("utf-8")

    @property
    def model_version(self) -> str:
        return self._field(H_VERSION).decode("utf-8")

    @property
    def n_features(self) -> int:
        return int(self.head[H_D])

    @property
    def n_classes(self) -> int:
        return int(self.head[H_K])

    def blob(self, name: str) -> memoryview:
        """The raw bytes of ``features``, ``scores`` or ``confidence`` (no copy)."""
        at = {"features": H_FEATURES, "scores": H_SCORES, "confidence": H_CONF}[name]
        o, ln = int(self.head[at]), int(self.head[at + 1])
        return memoryview(self.raw)[o: o + ln]

    def any_empty(self, column: str) -> bool:
        return bool((self.lens[STRING_COLUMNS[column]] == 0).any())

    def event_ids(self) -> np.ndarray | None:
        """Event ids as a fixed-width unicode array; None if one is not ASCII, or if the
        array would take more than four times the message (ids of very unequal length)."""
        offs, lens = self.offs[0], self.lens[0]
        width = int(lens.max()) if self.n else 1
        if self.n * width > 4 * len(self.raw):  # one long id among many short ones: a
            return None  # fixed-width array would be huge; the generic path reads it
        mat, ascii = _gather_fixed(self.buf, offs, lens, width)
        if not ascii:
            return None
        return mat.view(f"<U{mat.shape[1]}").ravel()

    def strings(self, column: str) -> np.ndarray:
        """A column as an object array (see :meth:`distinct`)."""
        values, group = self.distinct(column)
        return values[group]

    def distinct(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """A column's distinct values (object array) and each row's index into them.

        Each distinct value is decoded once, strict UTF-8: ``UnicodeDecodeError`` on
        invalid bytes, as the generic reader raises.
        """
        s = STRING_COLUMNS[column]
        offs, lens = self.offs[s], self.lens[s]
        first, group = _distinct(self.buf, offs, lens)
        raw = self.raw
        values = np.empty(len(first), dtype=object)
        for g, i in enumerate(first.tolist()):
            o = int(offs[i])
            values[g] = raw[o: o + int(lens[i])].decode("utf-8")
        return values, group
