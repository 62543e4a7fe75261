"""The detection core: blocks in, incident records out. No Faust, no Kafka.

The worker and ``inferwatch replay`` both drive a :class:`DetectionEngine`, so replay
equals live by construction. Per model it keeps a drift, a confidence-shift and a
flood detector built from the model's :class:`~detectors.baseline.Profile`; a model
without a loaded profile is profiled from its first ``warmup_events`` events, which
are not themselves tested.

>>> from benchmarks.synthetic import make_block
>>> eng = DetectionEngine(DetectorConfig(window=500, warmup_events=3000))
>>> eng.process(make_block(n=3000, seed=1))          # becomes the baseline
[]
>>> recs = eng.process(make_block(n=2000, seed=2, start_ms=1_767_225_700_000, shift={0: 1.5}))
>>> sorted({r["detector"] for r in recs})
['drift']
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors import side_thread
from detectors.baseline import Profile
from detectors.binning import block_bins
from detectors.block import EventBlock, ModelKey
from detectors.client_table import block_client_keys
from detectors.confidence import ConfidenceShiftDetector
from detectors.config import DetectorConfig
from detectors.detection import Detection
from detectors.drift import DriftDetector
from detectors.extraction import ExtractionDetector
from detectors.flood import FloodDetector
from detectors.incidents import IncidentTracker

#: Most event ids a forensic record lists.
FORENSIC_EVENTS = 1000
#: Smallest block worth handing to the second detector thread (below it, the hand-over
#: costs more than it saves).
PARALLEL_MIN_EVENTS = 256


class ModelDetectors:
    """Every detector of one model version, sharing its profile."""

    def __init__(self, profile: Profile, cfg: DetectorConfig) -> None:
        self.profile = profile
        self.detectors = [
            DriftDetector(profile, cfg),
            ConfidenceShiftDetector(profile, cfg),
            FloodDetector(profile, cfg),
            ExtractionDetector(profile, cfg),
        ]

    def prepare(self, block: EventBlock) -> None:
        """Compute the inputs each detector derives from ``block`` alone, ahead of
        :meth:`update` (see :meth:`DetectionEngine.prepare`)."""
        for det in self.detectors:
            det.prepare(block)

    def update(self, block: EventBlock, kernel_seconds: Counter,
               threads: int = 1) -> list[Detection]:
        """Every detector's detections of ``block``, in detector order.

        With ``threads >= 2`` the extraction detector (the costliest, about 40 % of the
        work) runs on the helper thread of :mod:`detectors.side_thread` while the others
        run here. The block's shared inputs (client keys, baseline bins)
        are computed first, so both threads only read the block; the result is the same
        as on one thread.
        """
        here, side = self.detectors[:3], self.detectors[3:]
        fut = None
        if threads >= 2 and len(block) >= PARALLEL_MIN_EVENTS:
            block_client_keys(block)
            block_bins(block, self.profile.features, side[-1].cal.cut)
            fut = side_thread.submit(_run_in_turn, side, block)
        try:
            out, seconds = _run_in_turn(here if fut is not None else self.detectors, block)
        finally:
            if fut is not None:  # never leave the helper changing state behind our back
                side_out, side_seconds = fut.result()
        if fut is not None:
            out.extend(side_out)
            seconds.update(side_seconds)
        kernel_seconds.update(seconds)
        return out


def _run_in_turn(detectors: list[Any], block: EventBlock) -> tuple[list[Detection], Counter]:
    """Detections of ``block`` by each of ``detectors`` in order, and seconds per detector."""
    out: list[Detection] = []
    seconds: Counter = Counter()
    for det in detectors:
        t0 = time.perf_counter()
        out.extend(det.update(block))
        seconds[det.name] += time.perf_counter() - t0
    return out, seconds


@dataclass
class _Warmup:
    blocks: list[EventBlock] = field(default_factory=list)
    n: int = 0


class DetectionEngine:
    """Routes blocks to per-model detectors and folds detections into incidents."""

    def __init__(
        self, cfg: DetectorConfig | None = None, profiles: dict[ModelKey, Profile] | None = None
    ) -> None:
        self.cfg = cfg or DetectorConfig()
        self.profiles: dict[ModelKey, Profile] = dict(profiles or {})
        self.models: dict[ModelKey, ModelDetectors] = {}
        self.warmups: dict[ModelKey, _Warmup] = {}
        self.tracker = IncidentTracker(self.cfg.cooldown_ms, self.cfg.resolve_after_ms)
        self.max_ts = -1
        self.model_max_ts: dict[ModelKey, int] = {}
        self.events_seen = 0
        self.detections = Counter()
        self.kernel_seconds: Counter = Counter()

    def watermark_ms(self, key: ModelKey) -> int:
        """Event time up to which all events of a model are assumed to have arrived.

        Per model, so one event dated far ahead (a producer clock error) can only move the
        clock of its own model, not resolve every other model's incidents.
        """
        return self.model_max_ts.get(key, -1) - self.cfg.allowed_lateness_ms

    def process(self, block: EventBlock) -> list[dict[str, Any]]:
        """Feed one block; return the incident records it caused (possibly none)."""
        n = len(block)
        if n == 0:
            return []
        self.events_seen += n
        self.max_ts = max(self.max_ts, int(block.ts.max()))
        self.model_max_ts[block.key] = max(self.model_max_ts.get(block.key, -1),
                                           int(block.ts.max()))
        dets = self.models.get(block.key)
        if dets is None:
            dets, block = self._warm(block)
            if dets is None or len(block) == 0:
                return self.tracker.advance(self.watermark_ms(block.key), block.key)
        detections = dets.update(block, self.kernel_seconds, self.cfg.detector_threads)
        detections.sort(key=lambda d: (d.timestamp_ms, d.detector, d.client_id or ""))
        for d in detections:
            self.detections[d.detector] += 1
        records = self.tracker.observe(detections)
        for rec in records:
            if rec["status"] == "open":
                rec["_forensics"] = self._forensics(rec, dets, block)
                rec["forensics_id"] = rec["_forensics"]["forensics_id"]
        records.extend(self.tracker.advance(self.watermark_ms(block.key), block.key))
        return records

    def prepare(self, block: EventBlock) -> None:
        """Compute ahead what the model's detectors derive from ``block`` alone.

        Baseline bins, whitened scores, client keys and query features depend only on the
        block and on calibration fixed when the detectors were built, so the worker
        computes them on its decode thread while the previous block's detectors run; the
        step then finds them on the block (:func:`detectors.block.derived_input`). Only
        reads the engine: safe to call from another thread while :meth:`process` runs. A
        model without detectors yet (warming up) is left to :meth:`process`.
        """
        dets = self.models.get(block.key)
        if dets is not None and len(block):
            dets.prepare(block)

    def _forensics(self, rec: dict[str, Any], dets: ModelDetectors,
                   block: EventBlock) -> dict[str, Any]:
        """Freeze what the detector saw when an incident opened (no raw feature values).

        Event ids are those of the current block inside the detector's window: for a
        per-model detector the last ``window`` events up to the trigger, for a per-client
        one that client's events up to the trigger (at most FORENSIC_EVENTS either way).
        """
        hit = np.flatnonzero(block.event_id == rec["trigger_event_id"])
        row = int(hit[-1]) if hit.size else len(block) - 1
        if rec["client_id"] is None:
            ids = block.event_id[max(0, row - self.cfg.window + 1): row + 1]
        else:
            mine = np.flatnonzero(block.client_id[: row + 1] == rec["client_id"])
            ids = block.event_id[mine]
        ids = ids[-FORENSIC_EVENTS:]
        det = next(d for d in dets.detectors if d.name == rec["detector"])
        state = det.snapshot() if hasattr(det, "snapshot") else {}
        return {
            "forensics_id": hashlib.sha256(
                f"{rec['incident_id']}:forensics".encode()).hexdigest()[:32],
            "incident_id": rec["incident_id"],
            "detector": rec["detector"],
            "model_id": rec["model_id"],
            "model_version": rec["model_version"],
            "client_id": rec["client_id"],
            "captured_at_ms": rec["timestamp_ms"],
            "window_start_ms": rec["window_start_ms"],
            "window_end_ms": rec["window_end_ms"],
            "event_ids": [str(e) for e in ids],
            "n_event_ids": int(len(ids)),
            "detector_state": state,
            "evidence": rec["evidence"],
            "baseline": {"source": dets.profile.source, "n_ref": dets.profile.n_ref},
        }

    def finish(self) -> list[dict[str, Any]]:
        """End of input (replay): report suppressed counts still pending."""
        return self.tracker.flush()

    def _warm(self, block: EventBlock) -> tuple[ModelDetectors | None, EventBlock]:
        """Build the model's detectors from a profile, or from its first events."""
        profile = self.profiles.get(block.key)
        if profile is not None:
            self.models[block.key] = ModelDetectors(profile, self.cfg)
            return self.models[block.key], block
        w = self.warmups.setdefault(block.key, _Warmup())
        need = self.cfg.warmup_events - w.n
        w.blocks.append(block.take(slice(0, need)))
        w.n += min(need, len(block))
        if w.n < self.cfg.warmup_events:
            return None, block.take(slice(0, 0))
        ref = EventBlock.concat(w.blocks)
        profile = Profile.build(
            ref, self.cfg.bins, self.cfg.flood_scales_ms, source=f"first {w.n} events"
        )
        del self.warmups[block.key]
        self.profiles[block.key] = profile
        self.models[block.key] = ModelDetectors(profile, self.cfg)
        return self.models[block.key], block.take(slice(need, None))

    def evictions(self) -> Counter:
        """Clients evicted from the per-client tables so far, by detector (all models)."""
        out: Counter = Counter()
        for dets in self.models.values():
            for det in dets.detectors:
                if hasattr(det, "evictions"):
                    out[det.name] += det.evictions
        return out

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and the end-of-run summary."""
        return {
            "events": self.events_seen,
            "models": len(self.models),
            "warming_up": {f"{k[0]}@{k[1]}": w.n for k, w in self.warmups.items()},
            "detections": dict(self.detections),
            "open_incidents": len(self.tracker.open),
            "kernel_seconds": {k: round(v, 4) for k, v in self.kernel_seconds.items()},
        }

