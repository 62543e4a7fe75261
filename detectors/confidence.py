"""Confidence shift: the model's own certainty moving away from its baseline.

The columns are per-event confidence and, where the model sends class probabilities,
normalised entropy and top-2 margin. A sliding window of them is compared with the
baseline exactly like features in :mod:`detectors.drift` (same kernel, same budget),
and the evidence says which way confidence moved: a drop usually means inputs the
model has not seen (noise, new population, adversarial probing).

>>> import numpy as np
>>> from detectors.baseline import Profile
>>> from benchmarks.synthetic import make_block
>>> det = ConfidenceShiftDetector(Profile.build(make_block(n=4000, seed=1)),
...                               DetectorConfig(window=500, step=50))
>>> det.update(make_block(n=2000, seed=2))
[]
>>> hits = det.update(make_block(n=1000, seed=3, confidence_drop=0.2))
>>> hits[0].evidence["direction"]
'down'
"""

from __future__ import annotations

from functools import partial

import numpy as np

from detectors.baseline import Profile
from detectors.block import EventBlock, derived_input, score_summaries
from detectors.config import DetectorConfig
from detectors.cusum import CusumHits
from detectors.detection import Detection, Explanation, at_row
from detectors.window_ks import WindowHits
from detectors.windowed import BaselineWindow


class ConfidenceShiftDetector:
    """Per-model shift of confidence, entropy and margin against a :class:`Profile`."""

    name = "confidence_shift"

    def __init__(self, profile: Profile, cfg: DetectorConfig) -> None:
        self.profile = profile
        self.window = BaselineWindow(profile.summaries, profile.n_ref, cfg)

    def snapshot(self) -> dict:
        """Frozen window state for a forensic record."""
        return self.window.snapshot()

    def prepare(self, block: EventBlock) -> None:
        """Compute ahead what :meth:`update` derives from ``block`` alone (its summaries)."""
        self._summaries(block)

    @staticmethod
    def _summaries(block: EventBlock) -> np.ndarray:
        return derived_input(block, "score_summaries", None,
                             lambda: score_summaries(block.scores, block.confidence))

    def update(self, block: EventBlock) -> list[Detection]:
        M = self._summaries(block)
        out = self._window(block, M)
        out.extend(self._cusum(block, M))
        return out

    def _cusum(self, block: EventBlock, M) -> list[Detection]:  # type: ignore[no-untyped-def]
        """Small sustained moves of confidence, entropy or margin (CUSUM per statistic).

        Summary and evidence are deferred (:mod:`detectors.detection`): a sustained shift
        alarms on many checks, and only the ones that become incident records are explained.
        """
        hits = self.window.update_cusum(M, block.ts)
        return [at_row(self.name, block, int(hits.rows[h]),
                       score=float(hits.value[h]),
                       threshold=self.window.cusum.h,
                       window_start_ms=int(hits.change_ts[h]),
                       explain=partial(self._explain_cusum, block, M, hits, h))
                for h in range(len(hits))]

    def _explain_cusum(self, block: EventBlock, M: np.ndarray, hits: CusumHits,
                       h: int) -> Explanation:
        """Summary and evidence of CUSUM alarm ``h`` over the summaries ``M`` of ``block``."""
        base_conf = self.profile.summaries.mean[0]
        row = int(hits.rows[h])
        moved = self.window.cusum_moved(M, hits, h)
        recent_conf = float(M[max(0, row - 99): row + 1, 0].mean())
        direction = "down" if recent_conf < base_conf else "up"
        summary = (
            f"Sustained {moved[0]['direction']} shift of {moved[0]['name']} for model "
            f"{block.model_id}@{block.model_version}: recent mean confidence "
            f"{recent_conf:.3f} against {base_conf:.3f} in the baseline (CUSUM)."
        )
        return summary, {
            "direction": direction,
            "window_mean_confidence": round(recent_conf, 4),
            "baseline_mean_confidence": round(base_conf, 4),
            "moved_statistics": moved,
            "change_estimated_at_ms": int(hits.change_ts[h]),
            "calibration": self.window.calibration(),
        }

    def _window(self, block: EventBlock, M) -> list[Detection]:  # type: ignore[no-untyped-def]
        """Window checks whose KS crossed the threshold (explanations deferred)."""
        hits = self.window.update(M, block.ts)
        return [at_row(self.name, block, int(hits.rows[h]),
                       score=float(hits.ks[h].max()),
                       threshold=self.window.threshold,
                       window_start_ms=int(hits.window_start_ts[h]),
                       explain=partial(self._explain_window, block, hits, h))
                for h in range(len(hits))]

    def _explain_window(self, block: EventBlock, hits: WindowHits, h: int) -> Explanation:
        """Summary and evidence of window check ``h`` of ``block``."""
        base_conf = self.profile.summaries.mean[0]
        win_conf = float(hits.means[h, 0])
        direction = "down" if win_conf < base_conf else "up"
        score = float(hits.ks[h].max())
        summary = (
            f"Confidence of model {block.model_id}@{block.model_version} went "
            f"{direction}: mean {win_conf:.3f} over the last {self.window.kernel.window} "
            f"predictions against {base_conf:.3f} in the baseline."
        )
        return summary, {
            "direction": direction,
            "window_mean_confidence": round(win_conf, 4),
            "baseline_mean_confidence": round(base_conf, 4),
            "moved_statistics": self.window.moved(hits, h),
            "max_ks": round(score, 4),
            "calibration": self.window.calibration(),
        }
