"""Calibrate river's drift detectors to inferwatch's false-alarm budget, on benign data only.

Why: river's detectors with default parameters alarm tens to tens of thousands of times
per million benign events, inferwatch at most once. Delays measured at such different
false-alarm rates are not comparable (a detector that alarms every 69 events 'detects'
any onset within ~69 events by chance). This module picks, for each detector, the one
parameter that sets its false-alarm rate, so that the *stream* (one detector per
standardised feature column, alarm if any column fires, exactly the setup of
:func:`benchmarks.quality.run_river`) stays within the same budget inferwatch is held to:
at most one false alarm per ``budget_events`` (10^6, ``DetectorConfig.budget_events``)
benign events.

Only the scenario's *reference* (benign) rows are used, never the stream being scored:

- **PageHinkley** (``threshold``, lambda; ``delta``, ``alpha``, ``min_instances`` stay at
  river's defaults). A benign stream of ``n_events`` rows is drawn by bootstrap from the
  standardised reference rows (whole rows, so the columns keep their dependence) and
  every column's Page-Hinkley statistic is computed over it, vectorised
  (:func:`ph_statistic`, the same recursion as ``river.drift.PageHinkley.update``).
  Without an alarm the detector never resets, so its trajectory does not depend on the
  threshold and the smallest threshold with no alarm anywhere in the simulated stream is
  exactly the largest statistic over all columns and events. One threshold serves all
  columns: they are standardised, so it is in the same units for each.
- **ADWIN** (``delta``; ``clock``, ``max_buckets``, ``min_window_length``,
  ``grace_period`` stay at river's defaults). The same argument holds: without a cut the
  window is everything seen so far and the exponential-histogram bucket boundaries
  depend only on the event count, not on the values or on ``delta``. At each check (every
  ``clock`` events) and each split river tests ``|mean(W0) - mean(W1)| > eps(delta)``;
  solving ``eps = |mean difference|`` for delta gives the split's critical delta
  (:func:`adwin_min_log_delta`), and the largest delta with no cut in the simulated
  stream is the smallest critical delta over all columns, checks and splits.
- **KSWIN** (``alpha``; ``window_size``, ``stat_size`` stay at defaults). KSWIN runs one
  two-sample KS test per column per event once its window is full; under a stationary
  stream each test's p-value is valid (ties in discrete columns only make it
  conservative), so ``P(alarm) <= alpha`` per test and, by the union bound over the
  ``d`` columns, the expected alarms per event of the stream are at most ``d * alpha``.
  ``alpha = 1 / (budget_events * d)`` meets the budget analytically, without simulation
  (a scipy KS test per event and column would take hours at 10^6 events). The union
  bound ignores the clumping of exceedances in overlapping windows, so KSWIN's real rate
  is lower than the budget: this calibration is conservative, in inferwatch's favour.
  ``d`` counts every column of the stream even where the report runs KSWIN on a few
  oracle-chosen columns only (that cap is for run time, not part of the detector).

The two simulation-calibrated parameters are each *one* draw of the "no alarm in
``n_events``" level, i.e. a rate of about one false alarm per ``n_events`` events per
stream: with ``n_events = budget_events`` (the full report) that is the budget itself. The
quick (CI) report uses a shorter simulation (``QUICK_CALIBRATION_EVENTS``), i.e. a looser
budget of about one per ``n_events`` events, which is stated in its JSON.
A relative margin of ``FLOAT_MARGIN`` keeps floating-point differences between the
vectorised and river's sequential arithmetic from producing an alarm at the boundary.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np
from scipy.signal import lfilter

FULL_CALIBRATION_EVENTS = 1_000_000  # the budget's own horizon: no alarm in 10^6 events
QUICK_CALIBRATION_EVENTS = 100_000  # CI run time: ~1 alarm per 10^5 events (looser)
FLOAT_MARGIN = 1e-3  # relative safety margin on the calibrated parameter (0.1 %)

# river's defaults (river 0.26), fixed here so the calibration matches the detector run.
PH_DEFAULTS = {"min_instances": 30, "delta": 0.005, "alpha": 1 - 0.0001}
ADWIN_DEFAULTS = {"clock": 32, "max_buckets": 5, "min_window_length": 5, "grace_period": 10}

_CHECK_CHUNK = 2_048  # ADWIN checks evaluated per numpy batch (bounds peak memory)


# --------------------------------------------------------------------------------------
# PageHinkley
# --------------------------------------------------------------------------------------
def ph_statistic(z: np.ndarray, min_instances: int = PH_DEFAULTS["min_instances"],
                 delta: float = PH_DEFAULTS["delta"],
                 alpha: float = PH_DEFAULTS["alpha"]) -> np.ndarray:
    """river's Page-Hinkley test statistic after every event (no reset), vectorised.

    Mirrors ``river.drift.PageHinkley.update`` in mode ``"both"``: ``dev = x - mean``
    (running mean including ``x``), ``S+ = alpha S+ + dev - delta``, ``S- = alpha S- +
    dev + delta``, statistic ``max(S+ - min S+, max(-1, max S-) - S-)`` once ``n >=
    min_instances`` (0 before). The detector alarms at the first event whose statistic
    exceeds the threshold.
    """
    z = np.asarray(z, dtype=np.float64)
    n = np.arange(1, z.size + 1, dtype=np.float64)
    dev = z - np.cumsum(z) / n
    s_inc = lfilter([1.0], [1.0, -alpha], dev - delta)
    s_dec = lfilter([1.0], [1.0, -alpha], dev + delta)
    test_inc = s_inc - np.minimum.accumulate(s_inc)
    test_dec = np.maximum(np.maximum.accumulate(s_dec), -1.0) - s_dec
    stat = np.maximum(test_inc, test_dec)
    stat[: min_instances - 1] = 0.0
    return stat


# --------------------------------------------------------------------------------------
# ADWIN
# --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def adwin_splits(n_events: int, clock: int = ADWIN_DEFAULTS["clock"],
                 max_buckets: int = ADWIN_DEFAULTS["max_buckets"],
                 grace_period: int = ADWIN_DEFAULTS["grace_period"]) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """ADWIN's checks and split points over ``n_events`` events without a cut.

    Returns ``(widths, splits)``: the window width at each check (``tick % clock == 0``
    and ``width > grace_period``) and, per check, the sizes ``n0`` of the older
    sub-window at every split river evaluates (oldest bucket first, the newest bucket
    excluded), padded with 0. Bucket sizes follow river's exponential histogram (level
    ``i`` holds up to ``max_buckets`` entries of ``2**i`` events; a sixth entry merges
    the two oldest into level ``i + 1``), which depends only on the count of events.
    """
    counts = [0]
    widths: list[int] = []
    rows: list[list[int]] = []
    for t in range(1, n_events + 1):
        counts[0] += 1
        idx = 0
        while counts[idx] == max_buckets + 1:
            if idx + 1 == len(counts):
                counts.append(0)
            counts[idx + 1] += 1
            counts[idx] -= 2
            if counts[idx + 1] <= max_buckets:
                break
            idx += 1
        if t % clock or t <= grace_period:
            continue
        n0, row = 0, []
        for level in range(len(counts) - 1, -1, -1):
            size = 1 << level
            for _ in range(counts[level]):
                n0 += size
                row.append(n0)
        row.pop()  # the split after the newest entry is never evaluated
        widths.append(t)
        rows.append(row)
    splits = np.zeros((len(rows), max((len(r) for r in rows), default=0)), dtype=np.int64)
    for i, r in enumerate(rows):
        splits[i, : len(r)] = r
    return np.asarray(widths, dtype=np.int64), splits


def adwin_min_log_delta(z: np.ndarray, widths: np.ndarray, splits: np.ndarray,
                        min_window_length: int = ADWIN_DEFAULTS["min_window_length"]) -> float:
    """log of the largest ``delta`` for which river's ADWIN makes no cut on ``z``.

    river's cut test (``rust_src/adwin.rs``, ``evaluate_cut``) at window width ``W`` with
    population variance ``v``: ``L = ln(2 ln W / delta)``, ``m = 1/(n0 - mwl + 1) + 1/(n1
    - mwl + 1)``, cut iff ``|mu0 - mu1| > sqrt(2 m v L) + 2/3 m L``. The right-hand side
    grows with ``L``; solving the quadratic in ``sqrt(L)`` for equality gives the
    split's critical ``L*``, and the cut happens iff ``delta > 2 ln W exp(-L*)``.
    """
    z = np.asarray(z, dtype=np.float64)
    S = np.concatenate([[0.0], np.cumsum(z)])
    Q = np.concatenate([[0.0], np.cumsum(z * z)])
    best = math.inf
    for lo in range(0, widths.size, _CHECK_CHUNK):
        W = widths[lo: lo + _CHECK_CHUNK].astype(np.float64)[:, None]
        n0 = splits[lo: lo + _CHECK_CHUNK]
        Wi = widths[lo: lo + _CHECK_CHUNK][:, None]
        n1 = Wi - n0
        ok = (n0 >= min_window_length) & (n1 >= min_window_length)
        if not ok.any():
            continue
        u0 = S[n0]
        u1 = S[Wi] - u0
        n0f = np.where(ok, n0, 1).astype(np.float64)
        n1f = np.where(ok, n1, 1).astype(np.float64)
        diff = np.abs(u0 / n0f - u1 / n1f)
        var = np.maximum(Q[Wi] / W - (S[Wi] / W) ** 2, 0.0)
        m = (1.0 / np.maximum(n0f - min_window_length + 1, 1.0)
             + 1.0 / np.maximum(n1f - min_window_length + 1, 1.0))
        a, b = 2.0 / 3.0 * m, np.sqrt(2.0 * m * var)
        s = (-b + np.sqrt(b * b + 4.0 * a * diff)) / (2.0 * a)
        log_delta = np.log(2.0 * np.log(W)) - s * s
        best = min(best, float(np.where(ok, log_delta, math.inf).min()))
    return best


# --------------------------------------------------------------------------------------
# Per stream
# --------------------------------------------------------------------------------------
def calibrate(reference: np.ndarray, n_events: int, budget_events: float,
              rng: np.random.Generator) -> dict[str, Any]:
    """Parameters of PageHinkley, ADWIN and KSWIN at the budget for one stream.

    ``reference`` is the standardised benign reference (rows x columns) of the series
    river runs on; a stream of ``n_events`` rows is bootstrapped from it (see the module
    docstring). Columns constant in the reference cannot move a detector on benign data
    and are left out of the simulation, not out of KSWIN's column count.
    """
    t0 = time.perf_counter()
    R = np.asarray(reference, dtype=np.float64)
    d = R.shape[1]
    idx = rng.integers(0, R.shape[0], size=n_events)
    widths, splits = adwin_splits(n_events)
    ph_cols: list[float | None] = [None] * d  # per column: the no-alarm level alone
    ad_cols: list[float | None] = [None] * d
    for j in range(d):
        col = R[:, j]
        if col.min() == col.max():
            continue
        z = col[idx]
        ph_cols[j] = float(ph_statistic(z).max())
        ad_cols[j] = adwin_min_log_delta(z, widths, splits)
    ph_vals = [(v, j) for j, v in enumerate(ph_cols) if v is not None]
    ad_vals = [(v, j) for j, v in enumerate(ad_cols) if v is not None and math.isfinite(v)]
    ph_max, ph_col = max(ph_vals) if ph_vals else (0.0, None)
    ad_log, ad_col = min(ad_vals) if ad_vals else (math.inf, None)
    threshold = ph_max * (1.0 + FLOAT_MARGIN)
    delta = math.exp(ad_log) * (1.0 - FLOAT_MARGIN) if math.isfinite(ad_log) else 1.0
    return {
        "method": "bootstrap of standardised reference rows; PageHinkley threshold = max "
                  "statistic, ADWIN delta = min critical delta (no alarm in the simulated "
                  "stream); KSWIN alpha = 1 / (budget_events * columns) (union bound)",
        "simulated_events": int(n_events),
        "budget_events": float(budget_events),
        "columns": int(d),
        "PageHinkley": {"threshold": round(threshold, 4), "binding_column": ph_col,
                        "default_threshold": 50.0,
                        "column_max_statistic": [None if v is None else round(v, 2)
                                                 for v in ph_cols]},
        "ADWIN": {"delta": delta, "binding_column": ad_col, "default_delta": 0.002,
                  "column_log10_critical_delta": [
                      None if v is None else round(v / math.log(10), 2) for v in ad_cols]},
        "KSWIN": {"alpha": 1.0 / (budget_events * d), "default_alpha": 0.005},
        "seconds": round(time.perf_counter() - t0, 2),
    }
