"""Input drift: a model's feature distribution moving away from its golden baseline.

Every feature is binned on the baseline's quantiles; a sliding window of the model's
last ``window`` events is compared with the baseline per feature (KS distance and PSI).
The decision uses KS, whose threshold follows from the false-alarm budget by the DKW
bound; PSI is reported alongside because many ML teams read it. Two faster tests run
next to it on the same baseline: a per-feature CUSUM (:mod:`detectors.cusum`, sustained
shifts of one feature) and a whitened multivariate mean-shift test over several window
lengths (:mod:`detectors.whitened`, shifts spread over correlated features). A detection names the
features that moved, how far (KS, PSI, mean shift in baseline standard deviations),
and a multivariate summary (how many features moved, total PSI).

>>> from detectors.baseline import Profile
>>> from benchmarks.synthetic import make_block
>>> ref = make_block(n=4000, d=4, seed=1)
>>> det = DriftDetector(Profile.build(ref), DetectorConfig(window=500, step=50))
>>> det.update(make_block(n=3000, d=4, seed=2))
[]
>>> hits = det.update(make_block(n=1000, d=4, seed=3, shift={2: 1.0}))
>>> hits[0].evidence["moved_features"][0]["name"]
'f2'
"""

from __future__ import annotations

from functools import partial

import numpy as np

from detectors.baseline import Profile
from detectors.binning import block_bins
from detectors.block import EventBlock, derived_input
from detectors.config import DetectorConfig
from detectors.cusum import CusumHits
from detectors.detection import Detection, Explanation, at_row
from detectors.whitened import ShiftHits, WhitenedShift
from detectors.window_ks import WindowHits
from detectors.windowed import BaselineWindow


class DriftDetector:
    """Per-model feature drift against a :class:`Profile`."""

    name = "drift"

    def __init__(self, profile: Profile, cfg: DetectorConfig) -> None:
        self.profile = profile
        self.window = BaselineWindow(profile.features, profile.n_ref, cfg)
        # Profiles written before reference samples were stored have none: no shift test.
        self.shift = (WhitenedShift(profile.features, profile.sample_rows(), profile.n_ref, cfg)
                      if profile.sample else None)

    def snapshot(self) -> dict:
        """Frozen window state for a forensic record."""
        return self.window.snapshot()

    def prepare(self, block: EventBlock) -> None:
        """Compute ahead what :meth:`update` derives from ``block`` alone: its baseline
        bins and whitened scores."""
        self._whitened(block)

    def _whitened(self, block: EventBlock) -> np.ndarray | None:
        """The block's whitened scores (:meth:`WhitenedShift.whiten`); None without the test."""
        shift = self.shift
        if shift is None or not shift.enabled:
            return None
        return derived_input(block, "whitened", shift,
                             lambda: shift.whiten(self._bins(block)))

    def update(self, block: EventBlock) -> list[Detection]:
        """Detections of this block: KS window checks, then CUSUM, then whitened shift.

        Each detection's summary and evidence are deferred (:mod:`detectors.detection`):
        only the few that become incident records pay for the feature ranking and triage.
        """
        hits = self.window.update(block.X, block.ts)
        out = []
        for h in range(len(hits)):
            row = int(hits.rows[h])
            out.append(at_row(
                self.name, block, row,
                score=float(hits.ks[h].max()),
                threshold=self.window.threshold,
                window_start_ms=int(hits.window_start_ts[h]),
                explain=partial(self._explain_ks, block, hits, h),
            ))
        out.extend(self._cusum(block))
        out.extend(self._shift(block))
        return out

    def _bins(self, block: EventBlock) -> np.ndarray:
        """The block's baseline bins, shared with the model's other detectors."""
        return block_bins(block, self.profile.features, self.window.cusum.cut)

    def _explain_ks(self, block: EventBlock, hits: WindowHits, h: int) -> Explanation:
        """Summary and evidence of KS window check ``h`` of ``block``."""
        row = int(hits.rows[h])
        moved = self.window.moved(hits, h)
        n_moved = int((hits.ks[h] > self.window.threshold).sum())
        score = float(hits.ks[h].max())
        names = ", ".join(
            f"{m['name']} (KS {m['ks']:.2f})" for m in moved[:3] if m["over_threshold"]
        )
        summary = (
            f"Input drift on model {block.model_id}@{block.model_version}: "
            f"{n_moved} of {block.X.shape[1]} features moved away from the golden "
            f"baseline, most {names}."
        )
        return summary, {
            "moved_features": moved,
            "n_features_moved": n_moved,
            "n_features": int(block.X.shape[1]),
            "psi_total": round(float(hits.psi[h].sum()), 4),
            "max_ks": round(score, 4),
            "calibration": self.window.calibration(),
            "baseline": {"n_ref": self.profile.n_ref, "source": self.profile.source},
            **triage(block, row, self.window.kernel.window, moved, self.profile),
        }

    def _shift(self, block: EventBlock) -> list[Detection]:
        """Mean shifts spread over correlated features (whitened, several window lengths)."""
        if self.shift is None:
            return []
        hits = self.shift.update(block.X, block.ts, self._bins(block), self._whitened(block))
        return [at_row(self.name, block, int(hits.rows[h]),
                       score=float(hits.value[h]),
                       threshold=float(hits.threshold[h]),
                       window_start_ms=int(hits.window_start_ts[h]),
                       explain=partial(self._explain_shift, block, hits, h))
                for h in range(len(hits))]

    def _explain_shift(self, block: EventBlock, hits: ShiftHits, h: int) -> Explanation:
        """Summary and evidence of whitened-shift alarm ``h`` of ``block``."""
        assert self.shift is not None  # only called for alarms of the shift test
        row = int(hits.rows[h])
        moved = self.shift.moved(hits, h)
        w = int(hits.scale[h])
        names = ", ".join(f"{m['name']} {m['direction']} {abs(m['shift_in_std']):.2f} sd"
                          for m in moved[:3])
        summary = (
            f"Input drift on model {block.model_id}@{block.model_version}: the mean "
            f"of the last {w} events moved away from the golden baseline across "
            f"correlated features (whitened shift), most {names}."
        )
        return summary, {
            "moved_features": moved,
            "n_features_moved": sum(m["over_threshold"] for m in moved),
            "n_features": int(block.X.shape[1]),
            "window_events": w,
            "calibration": {**self.window.calibration(),
                            "whitened": self.shift.calibration()},
            "baseline": {"n_ref": self.profile.n_ref, "source": self.profile.source},
            **triage(block, row, w, moved, self.profile),
        }

    def _cusum(self, block: EventBlock) -> list[Detection]:
        """Sustained shifts of single features, caught event by event."""
        hits = self.window.update_cusum(block.X, block.ts, self._bins(block))
        return [at_row(self.name, block, int(hits.rows[h]),
                       score=float(hits.value[h]),
                       threshold=self.window.cusum.h,
                       window_start_ms=int(hits.change_ts[h]),
                       explain=partial(self._explain_cusum, block, hits, h))
                for h in range(len(hits))]

    def _explain_cusum(self, block: EventBlock, hits: CusumHits, h: int) -> Explanation:
        """Summary and evidence of CUSUM alarm ``h`` of ``block``."""
        row = int(hits.rows[h])
        moved = self.window.cusum_moved(block.X, hits, h)
        m = moved[0]
        summary = (
            f"Input drift on model {block.model_id}@{block.model_version}: feature "
            f"{m['name']} went {m['direction']} by {abs(m['shift_in_std']):.2f} baseline "
            f"standard deviations and stayed there (CUSUM)"
            + (f"; also moving: {', '.join(x['name'] for x in moved[1:])}."
               if len(moved) > 1 else ".")
        )
        return summary, {
            "moved_features": moved,
            "n_features_moved": len(moved),
            "n_features": int(block.X.shape[1]),
            "change_estimated_at_ms": int(hits.change_ts[h]),
            "calibration": self.window.calibration(),
            "baseline": {"n_ref": self.profile.n_ref, "source": self.profile.source},
            **triage(block, row, self.window.kernel.window, moved, self.profile),
        }


def triage(block: EventBlock, row: int, window: int, moved: list[dict],
           profile: Profile) -> dict:
    """Is the shift spread over the client population or concentrated in a few clients?

    Each event's contribution is its standardised deviation from the baseline mean in the
    direction each moved feature shifted; clients are ranked by their share of the total.
    When the three largest contributors carry at least 60 % of the shift while sending
    under 30 % of the events, the drift is ``concentrated`` (possible poisoning or
    manipulation by those clients); otherwise it is ``spread`` (natural drift). Computed on
    the events of the current block inside the window (up to ``window`` of them).
    """
    cols = [m["index"] for m in moved if m["over_threshold"]]
    lo = max(0, row - window + 1)
    if not cols or row - lo < 20:
        return {"triage": "unknown"}
    X = block.X[lo:row + 1, cols].astype(np.float64)
    mean = np.asarray([profile.features.mean[j] for j in cols])
    std = np.asarray([profile.features.std[j] or 1.0 for j in cols])
    sign = np.sign([m["shift_in_std"] or 1.0 for m in moved if m["over_threshold"]])
    contrib = (((X - mean) / std) * sign).sum(axis=1)
    clients, inv = np.unique(block.client_id[lo:row + 1].astype(str), return_inverse=True)
    per_client = np.bincount(inv, weights=contrib)
    events = np.bincount(inv)
    total = per_client[per_client > 0].sum()
    if total <= 0:
        return {"triage": "unknown"}
    top = np.argsort(-per_client, kind="stable")[:3]
    shift_share = float(per_client[top].clip(min=0).sum() / total)
    event_share = float(events[top].sum() / events.sum())
    verdict = "concentrated" if shift_share >= 0.6 and event_share < 0.3 else "spread"
    return {
        "triage": verdict,
        "triage_detail": {
            "clients_in_window": int(len(clients)),
            "top3_share_of_shift": round(shift_share, 3),
            "top3_share_of_events": round(event_share, 3),
            "top_clients": [{"client_id": str(clients[i]), "events": int(events[i]),
                             "share_of_shift": round(float(per_client[i] / total), 3)}
                            for i in top],
        },
    }
