"""The Detection type: one detector's call on one key, before suppression and lifecycle.

A detection's decision fields (key, score, threshold, window, trigger, time) are always
set when it is made. Its explanation (``summary`` and ``evidence``) may instead be
*deferred*: the detector passes ``explain``, a callable returning ``(summary, evidence)``,
and it runs the first time either attribute is read. Once a drift is under way the
drift detector fires on every check (thousands of detections per incident record), while
the :class:`~detectors.incidents.IncidentTracker` turns only the first and one per cooldown
into records; building the evidence (client triage, ranked features) for every check
cost more than the statistics themselves.

``explain`` may read the block and the hit arrays the detection came from, so it must be
resolved while those are alive and unchanged: the tracker resolves what it publishes and,
at the end of each ``observe`` call, the last detection of every episode it keeps (see
:meth:`Detection.materialize`). A pickled detection is always resolved first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: What a deferred explanation returns: the summary sentence and the evidence dict.
Explanation = tuple[str, dict[str, Any]]

_FIELDS = ("detector", "model_id", "model_version", "client_id", "score", "threshold",
           "window_start_ms", "window_end_ms", "trigger_event_id", "timestamp_ms")


class Detection:
    """A statistic crossed its calibrated threshold on a window ending at ``timestamp_ms``.

    ``detector`` is one of drift | confidence_shift | query_flood | extraction.
    """

    __slots__ = (*_FIELDS, "_summary", "_evidence", "_explain")

    def __init__(self, detector: str, model_id: str, model_version: str,
                 client_id: str | None, score: float, threshold: float,
                 window_start_ms: int, window_end_ms: int, trigger_event_id: str,
                 timestamp_ms: int, summary: str = "", evidence: dict[str, Any] | None = None,
                 *, explain: Callable[[], Explanation] | None = None) -> None:
        self.detector = detector
        self.model_id = model_id
        self.model_version = model_version
        self.client_id = client_id
        self.score = score
        self.threshold = threshold
        self.window_start_ms = window_start_ms
        self.window_end_ms = window_end_ms
        self.trigger_event_id = trigger_event_id
        self.timestamp_ms = timestamp_ms
        self._summary = summary
        self._evidence = evidence if evidence is not None else {}
        self._explain = explain

    def materialize(self) -> Detection:
        """Run a deferred explanation now (no-op when there is none); returns ``self``."""
        if self._explain is not None:
            explain, self._explain = self._explain, None
            self._summary, self._evidence = explain()
        return self

    @property
    def deferred(self) -> bool:
        """True while the explanation has not been computed."""
        return self._explain is not None

    @property
    def summary(self) -> str:
        return self.materialize()._summary

    @summary.setter
    def summary(self, value: str) -> None:
        self.materialize()
        self._summary = value

    @property
    def evidence(self) -> dict[str, Any]:
        return self.materialize()._evidence

    @evidence.setter
    def evidence(self, value: dict[str, Any]) -> None:
        self.materialize()
        self._evidence = value

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What one incident is about: detector, model, version and (maybe) client."""
        return (self.detector, self.model_id, self.model_version, self.client_id or "")

    def _values(self) -> tuple[Any, ...]:
        return (*(getattr(self, f) for f in _FIELDS), self.summary, self.evidence)

    def __getstate__(self) -> tuple[Any, ...]:
        """Pickle state: the fields with the explanation resolved (callables may not pickle)."""
        return self._values()

    def __setstate__(self, state: Any) -> None:
        # Checkpoints written while Detection was a slotted dataclass carry
        # ``(None, {slot: value})``.
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            values = state[1]
            state = (*(values[f] for f in _FIELDS), values.get("summary", ""),
                     values.get("evidence", {}))
        for name, value in zip(_FIELDS, state[: len(_FIELDS)], strict=True):
            setattr(self, name, value)
        self._summary, self._evidence = state[len(_FIELDS)], state[len(_FIELDS) + 1]
        self._explain = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detection):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaced

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in _FIELDS)
        return f"Detection({fields}, summary={self.summary!r}, evidence={self.evidence!r})"


def at_row(detector: str, block: Any, row: int, *, score: float, threshold: float,
           window_start_ms: int, summary: str = "", evidence: dict[str, Any] | None = None,
           client_id: str | None = None,
           explain: Callable[[], Explanation] | None = None) -> Detection:
    """A detection triggered by event ``row`` of ``block``: the window ends at that event.

    Pass either ``summary`` and ``evidence`` or a deferred ``explain`` (module docstring).
    """
    t = int(block.ts[row])
    return Detection(
        detector=detector, model_id=block.model_id, model_version=block.model_version,
        client_id=client_id, score=float(score), threshold=float(threshold),
        window_start_ms=int(window_start_ms), window_end_ms=t,
        trigger_event_id=str(block.event_id[row]), timestamp_ms=t,
        summary=summary, evidence=evidence, explain=explain,
    )
