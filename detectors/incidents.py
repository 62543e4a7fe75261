"""Incident lifecycle: one ongoing condition is one incident, not one record per check.

Detections of the same (detector, model, version, client) form an *episode*. The first
opens an incident whose ``incident_id`` hashes the key and the onset window, so a
replay or a restarted worker re-derives the same id. Repeats within ``cooldown_ms``
(event time) are folded into a count; after the cooldown the next one emits an
``update`` carrying that count. When no detection was seen for ``resolve_after_ms``
the incident is ``resolved``. Everything runs on event time, so the records are the
same whether the events arrive live or from a file.

Detections may carry a deferred explanation (:mod:`detectors.detection`): only the ones
that become records are explained, plus each episode's latest detection, which a later
``resolved`` record quotes and a checkpoint pickles. That one is resolved before
``observe`` returns, while the block it points into is still the current one.

Severity rules (documented in the README): the ratio of score to threshold sets a
base level (>= 4 critical, >= 2 high, >= 1.25 medium, else low); an incident that has
lasted longer than five cooldowns is raised one level.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from detectors.detection import Detection

LEVELS = ("low", "medium", "high", "critical")


def incident_id(d: Detection) -> str:
    """Deterministic id from detector, key and onset window."""
    raw = "\x1f".join(
        (d.detector, d.model_id, d.model_version, d.client_id or "", str(d.window_start_ms))
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def severity(score: float, threshold: float, duration_ms: int, cooldown_ms: int) -> str:
    """Severity from how far over threshold and how long it has lasted."""
    ratio = score / threshold if threshold > 0 else float("inf")
    level = 3 if ratio >= 4 else 2 if ratio >= 2 else 1 if ratio >= 1.25 else 0
    if duration_ms > 5 * cooldown_ms:
        level = min(level + 1, 3)
    return LEVELS[level]


@dataclass
class _Episode:
    incident_id: str
    opened_ms: int
    last: Detection
    last_emit_ms: int
    pending: int = 0
    total: int = 1


class IncidentTracker:
    """Folds detections into open / update / resolved incident records."""

    def __init__(self, cooldown_ms: int, resolve_after_ms: int) -> None:
        self.cooldown_ms = cooldown_ms
        self.resolve_after_ms = resolve_after_ms
        self.open: dict[tuple[str, str, str, str], _Episode] = {}

    def observe(self, detections: list[Detection]) -> list[dict[str, Any]]:
        """Records (as dicts with the ``ml-incidents`` fields) caused by these detections."""
        out: list[dict[str, Any]] = []
        touched: list[_Episode] = []
        for d in detections:
            ep = self.open.get(d.key)
            if ep is not None and d.timestamp_ms - ep.last.timestamp_ms > self.resolve_after_ms:
                out.append(self._resolve(d.key, ep))
                ep = None
            if ep is None:
                ep = self.open[d.key] = _Episode(incident_id(d), d.timestamp_ms, d, d.timestamp_ms)
                out.append(self._record(ep, d, "open", count=1))
                touched.append(ep)
                continue
            ep.total += 1
            ep.pending += 1
            ep.last = d
            touched.append(ep)
            if d.timestamp_ms - ep.last_emit_ms >= self.cooldown_ms:
                out.append(self._record(ep, d, "update", count=ep.pending))
                ep.pending = 0
                ep.last_emit_ms = d.timestamp_ms
        for ep in touched:  # the latest detection outlives this call: explain it now
            ep.last.materialize()
        return out

    def advance(self, watermark_ms: int, model: tuple[str, str] | None = None
                ) -> list[dict[str, Any]]:
        """Resolve incidents (of ``model``, or all) quiet for longer than the quiet period."""
        done = [
            k for k, ep in self.open.items()
            if (model is None or k[1:3] == model)
            and watermark_ms - ep.last.timestamp_ms > self.resolve_after_ms
        ]
        return [self._resolve(k, self.open[k]) for k in sorted(done)]

    def flush(self) -> list[dict[str, Any]]:
        """Emit pending counts as updates (end of a replay); incidents stay open."""
        out = []
        for ep in self.open.values():
            if ep.pending:
                out.append(self._record(ep, ep.last, "update", count=ep.pending))
                ep.pending = 0
                ep.last_emit_ms = ep.last.timestamp_ms
        return out

    def _resolve(self, key: tuple[str, str, str, str], ep: _Episode) -> dict[str, Any]:
        del self.open[key]
        rec = self._record(ep, ep.last, "resolved", count=ep.pending)
        rec["timestamp_ms"] = ep.last.timestamp_ms + self.resolve_after_ms
        rec["summary"] = (
            f"Resolved: no {ep.last.detector} detection for "
            f"{self.resolve_after_ms / 1000:g} s. {ep.last.summary}"
        )
        return rec

    def _record(self, ep: _Episode, d: Detection, status: str, count: int) -> dict[str, Any]:
        return {
            "incident_id": ep.incident_id,
            "status": status,
            "detector": d.detector,
            "model_id": d.model_id,
            "model_version": d.model_version,
            "client_id": d.client_id,
            "severity": severity(
                d.score, d.threshold, d.timestamp_ms - ep.opened_ms, self.cooldown_ms
            ),
            "score": float(d.score),
            "threshold": float(d.threshold),
            "window_start_ms": int(d.window_start_ms),
            "window_end_ms": int(d.window_end_ms),
            "trigger_event_id": d.trigger_event_id,
            "timestamp_ms": int(d.timestamp_ms),
            "count": int(count),
            "total_count": int(ep.total),
            "opened_ms": int(ep.opened_ms),
            "evidence": d.evidence,
            "summary": d.summary,
        }
