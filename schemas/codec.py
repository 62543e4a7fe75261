"""Bulk decode and validation: raw Kafka message values -> EventBlocks + rejects.

Single-event messages (``inference-events``) are JSON text or Confluent-framed Avro,
told apart by the first byte (Avro frames start with 0, JSON never does). JSON objects
are parsed with orjson (about six times faster than the standard library on a
32-feature event); text orjson refuses (it is strict RFC 8259: no ``NaN`` literals, no
integers beyond 64 bits, no lone surrogates) takes the standard library's path, which
either accepts it as before or gives the reason it is rejected. Batch
messages (``inference-batches``) are framed ``InferenceBatch`` records whose columns
become numpy arrays with no per-event Python work.

Nothing here raises on bad input: every rejected message comes back as a
:class:`Reject` with a stable ``code`` and a human-readable ``reason``.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numba
import numpy as np
import orjson

from detectors.block import EventBlock, ModelKey
from detectors.client_table import client_hashes
from schemas import wire
from schemas.batch_scan import ScannedBatch

REQUIRED = ("event_id", "timestamp_ms", "model_id", "model_version", "client_id", "features")
#: Event time beyond year 2200 (ms) is certainly a unit error (µs or ns sent as ms).
MAX_TIMESTAMP_MS = 7_258_118_400_000
SCORE_SUM_TOLERANCE = 0.01
#: Single-event messages are validated in groups of about this many input bytes (see
#: :meth:`Decoder.decode_events`): ~100 typical events per column pass, and never more
#: than this (plus one message) of parsed but unchecked input held at once.
CHECK_GROUP_BYTES = 1 << 16


@dataclass(slots=True)
class Reject:
    """A message (or rows of a batch message) that did not decode or validate."""

    index: int  # position of the message in the decoded sequence
    code: str  # stable, machine-readable: bad_json, bad_avro, missing_field, ...
    reason: str  # one sentence for a human
    rows: int = 1  # events lost with it (batch messages can carry many)


@dataclass(slots=True)
class ModelShape:
    """What every event of a model must look like: feature count and score count."""

    n_features: int
    n_classes: int


@dataclass
class DecodeResult:
    blocks: list[EventBlock] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    @property
    def n_events(self) -> int:
        return sum(len(b) for b in self.blocks)


class _Invalid(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


_F32_MAX = float(np.finfo(np.float32).max)
#: Integers beyond this magnitude cannot become a float64; they are rejected, not crashed on.
_MAX_INT = 2**1023


def _is_num(x: Any) -> bool:
    return type(x) is float or (type(x) is int and -_MAX_INT < x < _MAX_INT)


def _all_num(xs: list[Any]) -> bool:
    """``all(map(_is_num, xs))``, with one C-level pass over the element types.

    JSON and Avro give plain floats for nearly every feature and score; only when ints (or
    anything else) are present does the per-element check run.
    """
    types = set(map(type, xs))
    if types <= _FLOAT_ONLY:
        return True
    return types <= _FLOAT_OR_INT and all(map(_is_num, xs))


_FLOAT_ONLY = frozenset({float})
_FLOAT_OR_INT = frozenset({float, int})
_STR_ONLY = frozenset({str})
_STR_OR_INT = frozenset({str, int})
_INT_ONLY = frozenset({int})
_LIST_ONLY = frozenset({list})
#: Columns every event must carry (``prediction`` may be null only to fail its type check).
_REQUIRED_AND_PREDICTION = (*REQUIRED, "prediction")

#: Fields that are never floats in a valid event (see :meth:`Decoder._check_group`).
_NOT_FLOAT = ("event_id", "timestamp_ms", "model_id", "model_version", "client_id",
              "prediction")
_OPEN_BRACE = ord("{")

#: The C scanner behind ``json.loads``, called directly on a message's text: it skips
#: the per-call wrapper (whitespace regexes, argument checks). Anything it does not
#: accept as one whole object goes through ``json.loads``, which then gives the reason.
_scan_json = json.scanner.make_scanner(json.JSONDecoder())


def _utf8_ok(s: str) -> bool:
    """False for strings holding lone surrogates (JSON escapes can smuggle them in)."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _all_utf8_ok(strings: Sequence[str]) -> bool:
    """:func:`_utf8_ok` of every string, in one pass over their concatenation.

    A lone surrogate stays one after joining (Python strings never pair surrogates), so the
    joined string fails exactly when one of the parts does; one ``isascii`` over a batch's
    ids replaces thousands of Python calls.
    """
    return _utf8_ok("".join(strings))


def _plausible(ev: dict[str, Any]) -> bool:
    """Cheap check that an event could pass numeric validation (to fix a new model's shape)."""
    conf = ev.get("confidence")
    if conf is not None and not 0.0 <= conf <= 1.0:
        return False
    if not all(-_F32_MAX < v < _F32_MAX for v in ev["features"]):  # NaN fails too
        return False
    scores = ev.get("scores") or ()
    return all(0.0 <= v <= 1.0 for v in scores) and (
        not scores or abs(sum(scores) - 1.0) <= SCORE_SUM_TOLERANCE)


class Decoder:
    """Turns message values into per-model EventBlocks; learns model shapes as it goes.

    ``shapes`` maps (model_id, model_version) to the feature/score counts every event of
    that model must have. Baselines seed it; otherwise the first valid event fixes it.
    """

    def __init__(
        self,
        shapes: dict[ModelKey, ModelShape] | None = None,
        max_message_bytes: int = 1_000_000,
        max_features: int = 4096,
    ) -> None:
        self.shapes: dict[ModelKey, ModelShape] = dict(shapes or {})
        self.max_message_bytes = max_message_bytes
        self.max_features = max_features
        self._batch_has_confidence = False

    # -- single-event messages ---------------------------------------------------------
    def decode_events(self, values: Sequence[bytes | None]) -> DecodeResult:
        """Decode one event per message; group valid events by model in arrival order.

        Parsed events are validated in groups of about ``CHECK_GROUP_BYTES`` of input: one
        pass per field over the group (:meth:`_all_valid`) accepts the usual all-valid
        group, and any group holding an invalid event is checked event by event, which
        gives each rejected message its reason. Bounding the group bounds the memory held
        by parsed but not yet checked (possibly huge) messages.
        """
        rejects: list[Reject] = []
        valid: list[tuple[int, dict[str, Any]]] = []
        pending: list[tuple[int, dict[str, Any]]] = []
        pending_bytes = 0
        for i, raw in enumerate(values):
            try:
                ev = self._parse_one(raw)
            except _Invalid as bad:
                rejects.append(Reject(i, bad.code, bad.reason))
                continue
            pending.append((i, ev))
            pending_bytes += len(raw)  # type: ignore[arg-type]  # parsed: not None
            if pending_bytes >= CHECK_GROUP_BYTES:
                self._check_group(pending, valid, rejects, values)
                pending, pending_bytes = [], 0
        self._check_group(pending, valid, rejects, values)
        groups: dict[ModelKey, list[tuple[int, dict[str, Any]]]] = {}
        for i, ev in valid:
            groups.setdefault((ev["model_id"], ev["model_version"]), []).append((i, ev))
        result = DecodeResult(rejects=rejects)
        for key, items in groups.items():
            block = self._block_from_dicts(key, items, rejects)
            if block is not None:
                result.blocks.append(block)
        rejects.sort(key=lambda r: r.index)
        return result

    def _check_group(self, group: list[tuple[int, dict[str, Any]]],
                     valid: list[tuple[int, dict[str, Any]]], rejects: list[Reject],
                     values: Sequence[bytes | None]) -> None:
        """Move the valid events of ``group`` to ``valid``, the others to ``rejects``."""
        if not group:
            return
        if self._all_valid([ev for _, ev in group]):
            valid.extend(group)
            return
        for i, ev in group:
            raw = values[i]
            if raw and raw[0] == _OPEN_BRACE and float in set(map(type, map(ev.get,
                                                                            _NOT_FLOAT))):
                # orjson reads integers beyond 64 bits as floats; in these fields that
                # changes a rejection's reason, so the standard library reads it again
                try:
                    ev = self._parse_text(raw)
                except _Invalid as bad:
                    rejects.append(Reject(i, bad.code, bad.reason))
                    continue
            try:
                self._check_fields(ev)
            except _Invalid as bad:
                rejects.append(Reject(i, bad.code, bad.reason))
                continue
            valid.append((i, ev))

    def _all_valid(self, evs: list[dict[str, Any]]) -> bool:
        """True only if every event passes :meth:`_check_fields` (column by column).

        Each test is one of :meth:`_check_fields`'s rules applied to a whole column with
        C-level passes (type sets, ``min``/``max``, one joined string). False means "some
        event fails or this cannot tell cheaply" (ints among the features, say); the
        caller then checks event by event, so a False here never changes an outcome.
        """
        try:
            cols = [[ev[f] for ev in evs] for f in _REQUIRED_AND_PREDICTION]
        except KeyError:
            return False
        event_id, ts, model_id, model_version, client_id, features, prediction = cols
        if any(None in c for c in cols[:-1]):  # prediction may be None only to fail its type
            return False
        if not all(set(map(type, c)) <= _STR_ONLY
                   for c in (event_id, model_id, model_version, client_id)):
            return False
        if "" in event_id or "" in model_id or "" in client_id:
            return False
        pred_types = set(map(type, prediction))
        if not pred_types <= _STR_OR_INT:
            return False
        text = [*event_id, *model_id, *model_version, *client_id]
        if str in pred_types:
            text.extend(p for p in prediction if type(p) is str)
        if not _all_utf8_ok(text):
            return False
        if not set(map(type, ts)) <= _INT_ONLY or min(ts) < 0 or max(ts) > MAX_TIMESTAMP_MS:
            return False
        if not self._number_lists_ok(features):
            return False
        scores = [ev.get("scores") for ev in evs]
        given = [x for x in scores if x is not None]
        if given and not self._number_lists_ok(given):
            return False
        confidence = [ev.get("confidence") for ev in evs]
        conf_given = [c for c in confidence if c is not None]
        if not _all_num(conf_given):
            return False
        if len(conf_given) < len(evs) and any(
                c is None and x is None for c, x in zip(confidence, scores, strict=True)):
            return False
        attrs = [a for ev in evs if (a := ev.get("attributes")) is not None]
        return not attrs or (
            all(isinstance(a, dict) for a in attrs)
            and set(map(type, chain.from_iterable(a.keys() for a in attrs))) <= _STR_ONLY
            and set(map(type, chain.from_iterable(a.values() for a in attrs))) <= _STR_ONLY
        )

    def _number_lists_ok(self, lists: list[Any]) -> bool:
        """Every item is a list of 1..max_features numbers (features or given scores)."""
        if not set(map(type, lists)) <= _LIST_ONLY:
            return False
        lengths = list(map(len, lists))
        if min(lengths) < 1 or max(lengths) > self.max_features:
            return False
        types = set(map(type, chain.from_iterable(lists)))
        return types <= _FLOAT_ONLY or (
            types <= _FLOAT_OR_INT and all(map(_is_num, chain.from_iterable(lists))))

    def _parse_one(self, raw: bytes | None) -> dict[str, Any]:
        if raw is None or len(raw) == 0:
            raise _Invalid("empty", "empty message value")
        if len(raw) > self.max_message_bytes:
            raise _Invalid(
                "oversized",
                f"message of {len(raw)} bytes exceeds the {self.max_message_bytes}-byte limit",
            )
        if wire.is_framed(raw):
            try:
                return wire.decode(raw, "inference_event")
            except ValueError as exc:
                raise _Invalid("bad_avro", str(exc)) from None
        if raw[0] == _OPEN_BRACE:  # the usual case: one strict RFC 8259 object, by orjson
            try:
                ev = orjson.loads(raw)
            except orjson.JSONDecodeError:
                ev = None  # not strict JSON: the stdlib path below accepts or explains
            if type(ev) is dict:
                return ev
        return self._parse_text(raw)

    def _parse_text(self, raw: bytes) -> dict[str, Any]:
        """The standard library's reading of a JSON message (lenient: NaN, big integers)."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid("bad_encoding", "message is neither UTF-8 JSON nor Avro") from None
        if text[0] == "{":  # the usual case: one object, no surrounding whitespace
            try:
                ev, end = _scan_json(text, 0)
            except (ValueError, RecursionError, StopIteration):
                end = -1
            if end == len(text):  # what json.loads returns for this text
                return ev
        try:
            ev = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise _Invalid("bad_json", f"invalid JSON: {exc}") from None
        if not isinstance(ev, dict):
            raise _Invalid("bad_json", f"JSON value is a {type(ev).__name__}, not an object")
        return ev

    def _check_fields(self, ev: dict[str, Any]) -> None:
        missing = [f for f in REQUIRED if f not in ev or ev[f] is None]
        if "prediction" not in ev:
            missing.append("prediction")
        if missing:
            raise _Invalid("missing_field", f"missing required field(s): {', '.join(missing)}")
        for f in ("event_id", "model_id", "model_version", "client_id"):
            if type(ev[f]) is not str:
                raise _Invalid("bad_type", f"{f} must be a string, got {type(ev[f]).__name__}")
        if not ev["event_id"] or not ev["model_id"] or not ev["client_id"]:
            raise _Invalid("bad_value", "event_id, model_id and client_id must not be empty")
        strings = [ev[f] for f in ("event_id", "model_id", "model_version", "client_id")]
        if type(ev["prediction"]) is str:
            strings.append(ev["prediction"])
        if not _all_utf8_ok(strings):
            raise _Invalid("bad_encoding", "a string field holds an unpaired UTF-16 surrogate")
        ts = ev["timestamp_ms"]
        if type(ts) is not int:
            raise _Invalid("bad_type", f"timestamp_ms must be an integer, got {type(ts).__name__}")
        if not 0 <= ts <= MAX_TIMESTAMP_MS:
            raise _Invalid("bad_timestamp", f"timestamp_ms {ts} is outside 0..{MAX_TIMESTAMP_MS}")
        pred = ev["prediction"]
        if not (type(pred) is str or type(pred) is int):
            raise _Invalid("bad_type", "prediction must be a string or an integer")
        feats = ev["features"]
        if type(feats) is not list or not feats:
            raise _Invalid("bad_type", "features must be a non-empty list of numbers")
        if len(feats) > self.max_features:
            raise _Invalid(
                "oversized", f"{len(feats)} features exceed the limit of {self.max_features}"
            )
        if not _all_num(feats):
            raise _Invalid("bad_type", "features must contain only numbers")
        scores = ev.get("scores")
        if scores is not None:
            if type(scores) is not list or not scores or len(scores) > self.max_features:
                raise _Invalid("bad_type", "scores must be a non-empty list of probabilities")
            if not _all_num(scores):
                raise _Invalid("bad_type", "scores must contain only numbers")
        conf = ev.get("confidence")
        if conf is not None and not _is_num(conf):
            raise _Invalid("bad_type", "confidence must be a number")
        if conf is None and scores is None:
            raise _Invalid("missing_field", "confidence is required when scores are absent")
        attrs = ev.get("attributes")
        if attrs is not None and not (
            isinstance(attrs, dict)
            and all(type(k) is str and type(v) is str for k, v in attrs.items())
        ):
            raise _Invalid("bad_type", "attributes must be a map of string to string")

    def _block_from_dicts(
        self, key: ModelKey, items: list[tuple[int, dict[str, Any]]], rejects: list[Reject]
    ) -> EventBlock | None:
        shape = self.shapes.get(key)
        known = shape is not None
        if shape is None:  # a new model: its first plausible event proposes the shape
            first = next((ev for _, ev in items if _plausible(ev)), items[0][1])
            shape = ModelShape(len(first["features"]), len(first.get("scores") or ()))
        feats = [ev["features"] for _, ev in items]
        scores = [ev.get("scores") for _, ev in items]
        if shape.n_classes:
            scores_ok = None not in scores and set(map(len, scores)) == {shape.n_classes}
        else:
            scores_ok = scores.count(None) == len(scores)
        if scores_ok and set(map(len, feats)) == {shape.n_features}:
            # the usual case: every event has the model's shape (one pass per column)
            kept = items
        else:
            kept = []
            for i, ev in items:
                d = len(ev["features"])
                k = len(ev.get("scores") or ())
                if d != shape.n_features:
                    rejects.append(
                        Reject(i, "feature_length", f"model {key[0]}@{key[1]} takes "
                               f"{shape.n_features} features, event has {d}")
                    )
                elif k != shape.n_classes:
                    rejects.append(
                        Reject(i, "scores_length", f"model {key[0]}@{key[1]} sends "
                               f"{shape.n_classes} scores per event, event has {k}")
                    )
                else:
                    kept.append((i, ev))
            if not kept:
                return None
            feats = [ev["features"] for _, ev in kept]
            scores = [ev.get("scores") for _, ev in kept]
        n = len(kept)
        evs = [ev for _, ev in kept]
        confidence = [ev.get("confidence") for ev in evs]
        with np.errstate(over="ignore", invalid="ignore"):
            X = np.array(feats, dtype=np.float32)
            if shape.n_classes:
                S = np.array(scores, dtype=np.float32)
            else:
                S = np.empty((n, 0), dtype=np.float32)
            conf_missing = np.array([c is None for c in confidence], dtype=bool)
            conf = np.array([np.nan if c is None else c for c in confidence], dtype=np.float32)
        block = EventBlock(
            key[0],
            key[1],
            np.array([ev["event_id"] for ev in evs], dtype=object),
            np.array([ev["timestamp_ms"] for ev in evs], dtype=np.int64),
            np.array([ev["client_id"] for ev in evs], dtype=object),
            X,
            S,
            conf,
            np.array(list(map(str, [ev["prediction"] for ev in evs])), dtype=object),
        )
        index = np.fromiter((i for i, _ in kept), dtype=np.int64, count=n)
        valid = _validate_numbers(block, index, rejects, conf_missing)
        if valid is not None and not known:
            self.shapes[key] = shape  # fixed only by an event that passed validation
        return valid

    # -- batch messages -----------------------------------------------------------------
    def decode_batches(self, values: Sequence[bytes | None]) -> DecodeResult:
        """Decode ``InferenceBatch`` messages; each becomes one block (after validation)."""
        result = DecodeResult()
        for i, raw in enumerate(values):
            try:
                block = self._batch_block(raw)
            except _Invalid as bad:
                result.rejects.append(Reject(i, bad.code, bad.reason, rows=bad_rows(raw)))
                continue
            index = np.full(len(block), i, dtype=np.int64)
            row_rejects: list[Reject] = []
            missing = np.full(len(block), not self._batch_has_confidence, dtype=bool)
            valid = _validate_numbers(block, index, row_rejects, missing)
            if row_rejects:
                result.rejects.append(_fold_rows(row_rejects, len(block)))
            if valid is not None:
                self.shapes.setdefault(valid.key, ModelShape(valid.X.shape[1],
                                                             valid.scores.shape[1]))
                result.blocks.append(valid)
        return result

    def _batch_block(self, raw: bytes | None) -> EventBlock:
        if raw is None or len(raw) == 0:
            raise _Invalid("empty", "empty message value")
        if len(raw) > self.max_message_bytes:
            raise _Invalid(
                "oversized",
                f"batch of {len(raw)} bytes exceeds the {self.max_message_bytes}-byte limit",
            )
        fields = _scanned_fields(raw)
        if fields is None:  # not well formed for the fast reader: the generic one says why
            try:
                fields = _BatchFields.from_record(wire.decode(raw, "inference_batch"))
            except ValueError as exc:
                raise _Invalid("bad_avro", str(exc)) from None
        return self._checked_block(fields)

    def _checked_block(self, f: _BatchFields) -> EventBlock:
        """Validate a batch's fields (either reader) and build its block."""
        n, d, k = f.n, f.n_features, f.n_classes
        if n == 0:
            raise _Invalid("empty", "batch carries no events")
        if f.column_lengths != {n}:
            raise _Invalid("bad_shape", "batch columns have different lengths")
        if not 0 < d <= self.max_features or not 0 <= k <= self.max_features:
            raise _Invalid("bad_shape", f"n_features={d}, n_classes={k} out of range")
        if len(f.features) != n * d * 4:
            raise _Invalid(
                "bad_shape", f"features carry {len(f.features)} bytes, expected {n}x{d}x4"
            )
        if len(f.scores) != n * k * 4:
            raise _Invalid(
                "bad_shape", f"scores carry {len(f.scores)} bytes, expected {n}x{k}x4"
            )
        if len(f.confidence) and len(f.confidence) != n * 4:
            raise _Invalid("bad_shape", "confidence must carry one float32 per event")
        if not len(f.confidence) and k == 0:
            raise _Invalid("missing_field", "batch carries neither confidence nor scores")
        key = (f.model_id, f.model_version)
        if not key[0]:
            raise _Invalid("bad_value", "model_id must not be empty")
        shape = self.shapes.get(key) or ModelShape(d, k)
        if (d, k) != (shape.n_features, shape.n_classes):
            raise _Invalid(
                "feature_length",
                f"model {key[0]}@{key[1]} takes {shape.n_features} features and "
                f"{shape.n_classes} scores, batch has {d} and {k}",
            )
        if f.empty_ids:
            raise _Invalid("bad_value", "event_ids and client_ids must not be empty")
        if not f.ids_utf8_ok():
            raise _Invalid("bad_encoding", "an id holds an unpaired UTF-16 surrogate")
        ts = f.ts
        if ts.min() < 0 or ts.max() > MAX_TIMESTAMP_MS:
            raise _Invalid("bad_timestamp", f"timestamps outside 0..{MAX_TIMESTAMP_MS}")
        f32 = np.dtype("<f4")
        self._batch_has_confidence = bool(len(f.confidence))
        conf = (
            np.frombuffer(f.confidence, dtype=f32).astype(np.float32)
            if len(f.confidence)
            else np.full(n, np.nan, dtype=np.float32)
        )
        block = EventBlock(
            key[0],
            key[1],
            f.event_id_column(),
            ts,
            f.client_column(),
            np.frombuffer(f.features, dtype=f32).reshape(n, d).astype(np.float32),
            np.frombuffer(f.scores, dtype=f32).reshape(n, k).astype(np.float32),
            conf,
            f.prediction_column(),
        )
        block.client_keys = f.client_keys(key)
        return block


class _BatchFields:
    """An InferenceBatch's fields as either reader produced them, for one set of checks.

    The generic reader (fastavro) gives Python lists; the fast one
    (:mod:`schemas.batch_scan`) positions in the message, from which columns are built
    with no Python object per event, and client keys from distinct client ids.
    """

    __slots__ = ("model_id", "model_version", "n", "column_lengths", "n_features",
                 "n_classes", "features", "scores", "confidence", "ts", "empty_ids",
                 "_rec", "_scan", "_event_ids", "_clients", "_predictions")

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> _BatchFields:
        f = cls()
        f.model_id, f.model_version = rec["model_id"], rec["model_version"]
        f.n = len(rec["event_ids"])
        f.column_lengths = {len(rec[c]) for c in ("timestamps_ms", "client_ids", "predictions")}
        f.n_features, f.n_classes = rec["n_features"], rec["n_classes"]
        f.features, f.scores, f.confidence = rec["features"], rec["scores"], rec["confidence"]
        f._rec, f._scan = rec, None
        f.empty_ids = "" in rec["event_ids"] or "" in rec["client_ids"]
        f.ts = np.asarray(rec["timestamps_ms"], dtype=np.int64) if f.n else np.zeros(0, np.int64)
        return f

    @classmethod
    def from_scan(cls, sc: ScannedBatch, event_ids: np.ndarray) -> _BatchFields:
        """Fields of a scanned batch; ``UnicodeDecodeError`` if any string is not UTF-8."""
        f = cls()
        f.model_id, f.model_version = sc.model_id, sc.model_version
        f.n = sc.n
        f.column_lengths = {sc.n}  # the scanner sends unequal columns to the generic path
        f.n_features, f.n_classes = sc.n_features, sc.n_classes
        f.features, f.scores = sc.blob("features"), sc.blob("scores")
        f.confidence = sc.blob("confidence")
        f._rec, f._scan, f._event_ids = None, sc, event_ids
        f.empty_ids = sc.any_empty("event") or sc.any_empty("client")
        f.ts = sc.ts
        f._clients = sc.distinct("client")
        f._predictions = sc.strings("prediction")
        return f

    def ids_utf8_ok(self) -> bool:
        if self._scan is not None:  # decoded strictly: no lone surrogate can be in there
            return True
        return _all_utf8_ok(self._rec["event_ids"]) and _all_utf8_ok(self._rec["client_ids"])

    def event_id_column(self) -> np.ndarray:
        if self._scan is not None:
            return self._event_ids
        return np.asarray(self._rec["event_ids"], dtype=object)

    def client_column(self) -> np.ndarray:
        if self._scan is not None:
            values, group = self._clients
            return values[group]
        return np.asarray(self._rec["client_ids"], dtype=object)

    def prediction_column(self) -> np.ndarray:
        if self._scan is not None:
            return self._predictions
        return np.asarray(self._rec["predictions"], dtype=object)

    def client_keys(self, key: ModelKey) -> np.ndarray | None:
        """Per-row client keys from the distinct ids (fast reader only; else computed on
        first use by the detectors)."""
        if self._scan is None:
            return None
        values, group = self._clients
        return client_hashes(key[0], key[1], values)[group]


def _scanned_fields(raw: bytes) -> _BatchFields | None:
    """The fast reader's fields, or None to let the generic reader decide (and word any
    reason): a foreign frame, a body it cannot walk, non-UTF-8 text (every string is
    decoded here, before any check), non-ASCII event ids."""
    if not wire.is_framed(raw) or wire.HEADER.unpack_from(raw)[1] != wire.SCHEMA_IDS[
            "inference_batch"]:
        return None
    sc = ScannedBatch.scan(raw, wire.HEADER.size)
    if sc is None:
        return None
    event_ids = sc.event_ids()
    if event_ids is None:
        return None
    try:
        return _BatchFields.from_scan(sc, event_ids)
    except UnicodeDecodeError:
        return None


def bad_rows(raw: bytes | None) -> int:
    """Events lost with a batch that failed whole (unknown when it does not decode: 1)."""
    if raw is None:
        return 1
    try:
        return max(1, len(wire.decode(raw, "inference_batch")["event_ids"]))
    except Exception:
        return 1


@numba.njit(cache=True, nogil=True)
def _row_checks(M):
    """Per row of a float32 matrix: every value finite (``isfinite(M).all(axis=1)``), and
    every value in [0, 1] (NaN is not); one compiled pass for both."""
    n, d = M.shape
    finite = np.empty(n, dtype=np.bool_)
    unit = np.empty(n, dtype=np.bool_)
    for i in range(n):
        ok = True
        in_unit = True
        for j in range(d):
            v = M[i, j]
            ok &= np.isfinite(v)
            in_unit &= (v >= 0.0) & (v <= 1.0)
        finite[i] = ok
        unit[i] = in_unit
    return finite, unit


@numba.njit(cache=True, nogil=True)
def _score_checks(S, tolerance):
    """Per row of the scores: finite, in [0, 1], summing to 1 within ``tolerance`` (summed
    in float64), and the largest score (NaN where a score is not finite); one pass in
    place of numpy's four row reductions."""
    n, k = S.shape
    finite, unit = _row_checks(S)
    sums_ok = np.empty(n, dtype=np.bool_)
    top = np.empty(n, dtype=np.float32)
    for i in range(n):
        total = 0.0
        best = -np.inf
        for j in range(k):
            v = S[i, j]
            total += v
            best = max(best, v)
        sums_ok[i] = abs(total - 1.0) <= tolerance
        top[i] = best if finite[i] else np.nan
    return finite, unit, sums_ok, top


def _validate_numbers(
    block: EventBlock, index: np.ndarray, rejects: list[Reject], conf_missing: np.ndarray
) -> EventBlock | None:
    """Vectorised checks: finite features/scores, probabilities in range, confidence.

    ``conf_missing`` marks events whose producer left confidence out (derived from the
    scores); an explicit NaN confidence is rejected, not replaced.
    """
    bad = np.zeros(len(block), dtype=np.int8)
    reasons = {
        1: ("nan_or_inf", "features contain NaN or infinity (after float32 conversion)"),
        2: ("nan_or_inf", "scores contain NaN or infinity"),
        3: ("bad_scores", "scores must lie in [0, 1] and sum to 1"),
        4: ("bad_confidence", "confidence must lie in [0, 1]"),
        5: ("nan_or_inf", "confidence is NaN or infinity"),
    }
    bad[~_row_checks(block.X)[0]] = 1
    if block.scores.shape[1]:
        finite, in_range, sums_ok, top = _score_checks(
            np.ascontiguousarray(block.scores, dtype=np.float32), SCORE_SUM_TOLERANCE)
        bad[(bad == 0) & ~finite] = 2
        bad[(bad == 0) & ~(in_range & sums_ok)] = 3
        if conf_missing.any():
            block.confidence[conf_missing] = top[conf_missing]
    bad[(bad == 0) & ~conf_missing & ~np.isfinite(block.confidence)] = 5
    with np.errstate(invalid="ignore"):
        conf_ok = (block.confidence >= 0) & (block.confidence <= 1)
    bad[(bad == 0) & ~conf_ok] = 4
    if not bad.any():
        return block
    for pos in np.flatnonzero(bad):
        code, reason = reasons[int(bad[pos])]
        rejects.append(Reject(int(index[pos]), code, f"event {block.event_id[pos]}: {reason}"))
    keep = bad == 0
    return block.take(keep) if keep.any() else None


def _fold_rows(row_rejects: list[Reject], n: int) -> Reject:
    """One reject for a batch message whose rows partly failed validation."""
    shown = "; ".join(r.reason for r in row_rejects[:3])
    more = f" (and {len(row_rejects) - 3} more)" if len(row_rejects) > 3 else ""
    return Reject(
        row_rejects[0].index,
        row_rejects[0].code,
        f"{len(row_rejects)} of {n} events in the batch rejected, the rest accepted: {shown}{more}",
        rows=len(row_rejects),
    )
