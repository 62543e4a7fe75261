"""Shared shell of the per-model detectors that compare a sliding window with a baseline."""

from __future__ import annotations

from typing import Any

import numpy as np

from detectors.baseline import ColumnProfile
from detectors.calibration import alpha_per_check, ks_threshold, psi_threshold
from detectors.config import DetectorConfig
from detectors.cusum import BinnedCusum, CusumHits
from detectors.window_ks import WindowHits, WindowKS


class BaselineWindow:
    """A :class:`WindowKS` over some columns, with its threshold calibrated from a budget."""

    def __init__(self, columns: ColumnProfile, n_ref: int, cfg: DetectorConfig) -> None:
        self.columns = columns
        d = len(columns.names)
        self.alpha = alpha_per_check(cfg.step, cfg.budget_events, d)
        self.threshold = ks_threshold(cfg.window, n_ref, self.alpha)
        self.psi_threshold = psi_threshold(cfg.window, n_ref, cfg.bins, self.alpha)
        self.budget_events = cfg.budget_events
        self.kernel = WindowKS(
            columns.edges_array(), columns.cdf_array(), cfg.window, cfg.step, self.threshold
        )
        self.cusum = BinnedCusum(columns, n_ref, cfg.budget_events, quiet_events=cfg.window)

    def update(self, M: np.ndarray, ts: np.ndarray) -> WindowHits:
        return self.kernel.update(M, ts)

    def update_cusum(self, M: np.ndarray, ts: np.ndarray, bins: np.ndarray | None = None
                     ) -> CusumHits:
        return self.cusum.update(M, ts, bins)

    def cusum_moved(self, M: np.ndarray, hits: CusumHits, h: int, top: int = 5
                    ) -> list[dict[str, Any]]:
        """Evidence for CUSUM alarm ``h``: the alarming column first, then the columns whose
        own CUSUM is at least half way to the threshold (moving too), with recent means."""
        row = int(hits.rows[h])
        lead = int(hits.column[h])
        levels = hits.levels[h]
        half = 0.5 * self.cusum.h
        others = [int(j) for j in np.argsort(-levels, kind="stable")
                  if j != lead and levels[j] >= half]
        recent = M[max(0, row - 99): row + 1].astype(np.float64)
        out = []
        for j in [lead, *others][:top]:
            std = self.columns.std[j] or 1.0
            mean = float(recent[:, j].mean())
            out.append({
                "name": self.columns.names[j],
                "index": j,
                "over_threshold": True,
                "test": "cusum",
                "cusum": round(float(hits.value[h] if j == lead else levels[j]), 3),
                "direction": "up" if mean >= self.columns.mean[j] else "down",
                "recent_mean": round(mean, 6),
                "baseline_mean": round(self.columns.mean[j], 6),
                "shift_in_std": round((mean - self.columns.mean[j]) / std, 3),
            })
        return out

    def moved(self, hits: WindowHits, h: int, top: int = 5) -> list[dict[str, Any]]:
        """The ``top`` columns by KS at check ``h``, worst first, with their numbers.

        Columns under the threshold are listed too (``over_threshold: false``) when fewer
        than ``top`` crossed it: a responder sees what is moving before it crosses.
        """
        ks = hits.ks[h]
        order = [int(j) for j in np.argsort(-ks, kind="stable")[:top]]
        out = []
        for j in order:
            std = self.columns.std[j] or 1.0
            out.append({
                "name": self.columns.names[j],
                "index": j,
                "over_threshold": bool(ks[j] > self.threshold),
                "ks": round(float(ks[j]), 4),
                "psi": round(float(hits.psi[h, j]), 4),
                "window_mean": round(float(hits.means[h, j]), 6),
                "baseline_mean": round(self.columns.mean[j], 6),
                "shift_in_std": round((float(hits.means[h, j]) - self.columns.mean[j]) / std, 3),
            })
        return out

    def snapshot(self, top: int = 5) -> dict[str, Any]:
        """The window as the detector sees it now: bin shares of the most-moved columns."""
        k = self.kernel
        ks = np.zeros(len(self.columns.names))
        for j in range(len(ks)):
            shares = k.window_shares(j)
            base = np.diff(np.concatenate([[0.0], self.columns.cdf[j]]))
            ks[j] = np.abs(np.cumsum(shares) - np.cumsum(base[: len(shares)])).max()
        cols = {}
        for j in np.argsort(-ks, kind="stable")[:top]:
            base = np.diff(np.concatenate([[0.0], self.columns.cdf[j]]))
            cols[self.columns.names[j]] = {
                "bin_edges": [round(e, 6) for e in self.columns.edges[j]],
                "window_shares": [round(float(v), 5) for v in k.window_shares(int(j))],
                "baseline_shares": [round(float(v), 5) for v in base],
                "ks": round(float(ks[j]), 5),
            }
        return {"window_events": int(k.meta[1]), "columns": cols}

    def calibration(self) -> dict[str, Any]:
        """How the threshold was set, for the incident evidence."""
        return {
            "statistic": "ks_over_baseline_quantile_bins",
            "cusum": self.cusum.calibration(),
            "ks_threshold": round(self.threshold, 5),
            "psi_threshold": round(self.psi_threshold, 5),
            "alpha_per_test": self.alpha,
            "budget_events_per_false_alarm": self.budget_events,
            "window_events": self.kernel.window,
            "check_every_events": self.kernel.step,
        }
