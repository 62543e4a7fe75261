"""EventBlock: the columnar unit every detector consumes.

A block holds events of one model (``model_id``, ``model_version``) in arrival order,
as numpy columns. Decoding produces blocks; detectors never see individual events.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numba
import numpy as np

ModelKey = tuple[str, str]
T = TypeVar("T")


@dataclass(slots=True)
class EventBlock:
    """Columns of ``n`` events of one model.

    ``X`` is ``(n, d)`` float32; ``scores`` is ``(n, k)`` float32 with ``k == 0`` when the
    model sends no class probabilities. ``confidence`` is always filled (derived as
    ``max(scores)`` where the producer left it out).
    """

    model_id: str
    model_version: str
    event_id: np.ndarray  # object (str), (n,)
    ts: np.ndarray  # int64 ms, (n,)
    client_id: np.ndarray  # object (str), (n,)
    X: np.ndarray  # float32, (n, d)
    scores: np.ndarray  # float32, (n, k)
    confidence: np.ndarray  # float32, (n,)
    prediction: np.ndarray  # object (str), (n,)
    #: 64-bit (model, client) keys, filled on first use by the per-client detectors.
    client_keys: np.ndarray | None = None
    #: What detectors derive from this block alone, by name: ``(owner, value)`` pairs
    #: (:func:`derived_input`), e.g. the baseline bins of ``X`` under one profile.
    derived: dict[str, tuple[Any, Any]] | None = None

    @property
    def key(self) -> ModelKey:
        return (self.model_id, self.model_version)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, idx: np.ndarray | slice) -> EventBlock:
        """Return the rows selected by ``idx`` (boolean mask, index array or slice), with
        their client keys when this block has them."""
        keys = self.client_keys
        return EventBlock(
            self.model_id,
            self.model_version,
            self.event_id[idx],
            self.ts[idx],
            self.client_id[idx],
            self.X[idx],
            self.scores[idx],
            self.confidence[idx],
            self.prediction[idx],
            client_keys=None if keys is None else keys[idx],
        )

    @staticmethod
    def concat(blocks: list[EventBlock]) -> EventBlock:
        """Join blocks of the same model, in order.

        Client keys are joined too when every block has them (the decoder computes them
        from each batch's distinct client ids: per event, hashing again costs a dict
        lookup).
        """
        first = blocks[0]
        if len(blocks) == 1:
            return first
        keys = [b.client_keys for b in blocks]
        return EventBlock(
            first.model_id,
            first.model_version,
            np.concatenate([b.event_id for b in blocks]),
            np.concatenate([b.ts for b in blocks]),
            np.concatenate([b.client_id for b in blocks]),
            np.concatenate([b.X for b in blocks]),
            np.concatenate([b.scores for b in blocks]),
            np.concatenate([b.confidence for b in blocks]),
            np.concatenate([b.prediction for b in blocks]),
            client_keys=None if any(k is None for k in keys) else np.concatenate(keys),
        )


def derived_input(block: EventBlock, name: str, owner: object,
                  compute: Callable[[], T]) -> T:
    """``compute()``, an input derived from ``block`` alone for ``owner``, computed once.

    The model's detectors share such inputs (the baseline bins of ``X``, used by three of
    them), and the worker computes them ahead, on its decode thread, while the previous
    block's detectors run (:meth:`detectors.engine.DetectionEngine.prepare`). ``owner`` is
    what the value depends on besides the block (a profile's columns, a detector's fixed
    calibration): a value cached for another owner, say a detector rebuilt from a
    checkpoint, is computed again rather than trusted.
    """
    cache = block.derived
    if cache is None:
        cache = block.derived = {}
    hit = cache.get(name)
    if hit is not None and hit[0] is owner:
        return hit[1]
    value = compute()
    cache[name] = (owner, value)
    return value


def coalesce(blocks: list[EventBlock], max_events: int) -> list[EventBlock]:
    """Join each model's blocks, in order, into blocks of at most ``max_events`` events.

    Producers send batches of a few thousand events; the detectors pay a fixed cost per
    block (a Python call per kernel, a hand-over to the second thread), so a worker joins
    the batches of one fetch before scoring them. Detections do not depend on where
    blocks are cut (tested), and each model's events keep their order; models come out
    in the order of their first block. A block already larger than ``max_events`` is
    left whole.

    >>> from benchmarks.synthetic import make_block
    >>> a, b = make_block(n=300, seed=1), make_block(n=200, seed=2)
    >>> [len(x) for x in coalesce([a, b, a], max_events=600)]
    [500, 300]
    """
    groups: dict[ModelKey, list[list[EventBlock]]] = {}
    for b in blocks:
        runs = groups.setdefault(b.key, [[]])
        if runs[-1] and sum(len(x) for x in runs[-1]) + len(b) > max_events:
            runs.append([])
        runs[-1].append(b)
    return [EventBlock.concat(run) for runs in groups.values() for run in runs]


def score_summaries(scores: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Per-event confidence statistics: ``(n, 3)`` of confidence, entropy, top-2 margin.

    Without scores (``k == 0``) only the confidence column is meaningful and the result
    is ``(n, 1)``. Entropy is normalised by ``log(k)`` so it lies in [0, 1] for any k.

    >>> s = np.array([[0.5, 0.5], [1.0, 0.0]], dtype=np.float32)
    >>> np.round(score_summaries(s, s.max(axis=1)), 3).tolist()
    [[0.5, 1.0, 0.0], [1.0, 0.0, 1.0]]
    """
    n, k = scores.shape
    if k < 2:
        return confidence.reshape(n, 1).astype(np.float32)
    out = np.empty((n, 3), dtype=np.float32)
    _summaries(np.ascontiguousarray(scores, dtype=np.float32),
               np.ascontiguousarray(confidence, dtype=np.float32), out)
    return out


@numba.njit(cache=True, nogil=True)
def _summaries(scores, confidence, out):
    """:func:`score_summaries` row by row in one pass (a numpy version took six passes,
    a partition among them: 58 ns per event against 30)."""
    n, k = scores.shape
    norm = 1.0 / math.log(k)
    for i in range(n):
        h = 0.0
        first = -np.inf
        second = -np.inf
        for c in range(k):
            v = scores[i, c]
            p = min(max(np.float64(v), 1e-12), 1.0)
            h -= p * math.log(p)
            if v > first:
                second = first
                first = v
            elif v > second:
                second = v
        out[i, 0] = confidence[i]
        out[i, 1] = min(max(h * norm, 0.0), 1.0)
        out[i, 2] = first - second
