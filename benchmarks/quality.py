"""The labelled-scenario quality report: detection delay and false alarms, with river for scale.

Why: thresholds calibrated from a false-alarm budget are a promise; this report checks it
on traffic whose truth is known (:mod:`benchmarks.scenarios`) and says how fast each
incident is raised. Every scenario runs through a fresh :class:`DetectionEngine` with
``DetectorConfig()`` defaults and a baseline ``Profile.build(reference)``, in blocks of
``--block-size`` events, exactly as the worker and ``inferwatch replay`` drive it.

Per scenario it reports:

- **detected**: a record (``open``, or ``update`` of an incident opened earlier) of the
  expected detector whose trigger event is at or after the onset, on the right key: the
  model for drift and confidence; an attacker client for per-client attacks; for a sybil
  campaign also a model-level ``extraction`` record.
- **delay**: trigger index minus onset index (events of the model), the attacker's own
  queries up to and including the trigger (per-client attacks), and event-time seconds
  from the onset to the trigger.
- **false alarms**: ``open`` records triggered before the onset, or after it on a
  client that is not an attacker, and every record on benign-only data. Model-level
  records of other detectors after the onset (input drift during a confidence drop, or
  caused by the attacker's own queries) are listed as *also fired*, not counted. Per
  million benign events: events before the onset plus non-attacker events after it.

river's drift detectors (``ADWIN``, ``KSWIN``, ``PageHinkley``, default parameters) run
on the same streams where they apply: on every feature for drift scenarios and the
benign population (an alarm is any feature's detector firing), on the confidence series
for confidence scenarios; not on per-client attacks, which they cannot key. Each column
is standardised by the reference's mean and standard deviation first (PageHinkley's
threshold is in the data's units). Costs are capped so the run stays within minutes:
KSWIN (a scipy KS test per update, ~0.5 ms) sees only the ``kswin_columns`` columns that
move most after the onset (oracle choice, in its favour) and ``kswin_events`` events on
either side of it, seeded for reproducibility; on the benign population all three see
the first ``river_population_events`` events. False alarms of a capped run are per
million of the events it saw, for the columns it saw.

Default parameters put river's detectors at very different false-alarm rates from
inferwatch's budget (one per 10^6 benign events), and a detector that alarms often also
'detects' fast by chance. So each river detector also runs **at the budget** (columns
``<name> @budget``): its rate-setting parameter (PageHinkley ``threshold``, ADWIN
``delta``, KSWIN ``alpha``) is calibrated per stream on the scenario's benign reference
only, so that the same per-column, alarm-if-any-column stream raises at most one alarm
per ``DetectorConfig.budget_events`` benign events; see :mod:`benchmarks.river_calibration`
for how (a bootstrap simulation of ``calibration_events`` reference rows for PageHinkley
and ADWIN, a union bound for KSWIN). The quick size simulates fewer events (a looser
budget, stated in the JSON). Only the first alarm after the onset matters for the delay,
so each column's detector stops there (the false alarms before the onset are all counted).

``python -m benchmarks.quality [--quick] [--out DIR] [--seed N]`` writes ``quality.json``,
``quality.md`` and ``quality.png`` (detection delay per scenario, inferwatch next to
river) to ``DIR`` (default ``bench-out/``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.river_calibration import (
    FULL_CALIBRATION_EVENTS,
    QUICK_CALIBRATION_EVENTS,
    calibrate,
)
from benchmarks.scenarios import SCENARIOS, SIZES, Scenario, build, chunks, event_index
from detectors.baseline import Profile
from detectors.block import EventBlock, score_summaries
from detectors.calibration import alpha_per_check, ks_threshold
from detectors.config import DetectorConfig
from detectors.engine import DetectionEngine

RIVER_CAPS = {
    "quick": {"kswin_columns": 1, "kswin_events": 600, "river_population_events": 30_000,
              "calibration_events": QUICK_CALIBRATION_EVENTS},
    "full": {"kswin_columns": 2, "kswin_events": 1_500, "river_population_events": 200_000,
             "calibration_events": FULL_CALIBRATION_EVENTS},
}
RIVER_DETECTORS = ("ADWIN", "KSWIN", "PageHinkley")
BUDGET_SUFFIX = " @budget"
RIVER_BUDGET_DETECTORS = tuple(d + BUDGET_SUFFIX for d in RIVER_DETECTORS)
# Tag of the calibration bootstrap's random stream, so that it never shares draws with the
# scenario generators (which are seeded by (seed, crc32(name)) alone).
_CALIBRATION_RNG_TAG = 1


# --------------------------------------------------------------------------------------
# inferwatch
# --------------------------------------------------------------------------------------
def run_engine(
    sc: Scenario, cfg: DetectorConfig, block_size: int, full: EventBlock | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Feed the scenario to a fresh engine; return its records and run statistics."""
    full = full if full is not None else sc.concat()
    profile = Profile.build(sc.reference, cfg.bins, cfg.flood_scales_ms)
    engine = DetectionEngine(cfg, profiles={profile.key: profile})
    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for blk in chunks(full, block_size):
        records.extend(engine.process(blk))
    records.extend(engine.finish())
    seconds = time.perf_counter() - t0
    stats = engine.stats()
    return records, {
        "seconds": round(seconds, 3),
        "events_per_s": round(len(full) / max(seconds, 1e-9)),
        "kernel_seconds": stats["kernel_seconds"],
        "detections": stats["detections"],
    }


def _is_hit(sc: Scenario, rec: dict[str, Any]) -> bool:
    if rec["detector"] != sc.expected_detector:
        return False
    client = rec["client_id"]
    if not sc.attacker_clients:
        return client is None
    if client in sc.attacker_clients:
        return True
    sybil = sc.family == "extraction" and len(sc.attacker_clients) > 1
    return sybil and client is None


def _brief(rec: dict[str, Any]) -> dict[str, Any]:
    ev = rec.get("evidence") or {}
    out = {
        "detector": rec["detector"],
        "status": rec["status"],
        "client_id": rec["client_id"],
        "index": event_index(rec["trigger_event_id"]),
        "timestamp_ms": rec["timestamp_ms"],
        "score": round(float(rec["score"]), 4),
        "threshold": round(float(rec["threshold"]), 4),
        "severity": rec["severity"],
        "summary": rec["summary"],
    }
    if "signal" in ev:
        out["signal"] = ev["signal"]
    return out


def evaluate(sc: Scenario, full: EventBlock, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Detection, delay and false alarms of one scenario's incident records."""
    n = len(full)
    onset = sc.onset_index
    if sc.attacker_clients:
        att = np.isin(full.client_id.astype(str), sorted(sc.attacker_clients))
    else:
        att = np.zeros(n, dtype=bool)
    att_cum = np.cumsum(att)
    if onset is None:
        benign = n
    elif sc.attacker_clients:
        benign = onset + int((~att[onset:]).sum())
    else:
        benign = onset
    hit: dict[str, Any] | None = None
    hit_idx = -1
    false_alarms: list[dict[str, Any]] = []
    also: Counter = Counter()
    also_first: dict[str, int] = {}
    for rec in records:
        if rec["status"] == "resolved":
            continue
        i = event_index(rec["trigger_event_id"])
        is_open = rec["status"] == "open"
        if onset is None or i < onset:
            if is_open:
                false_alarms.append(_brief(rec))
            continue
        if _is_hit(sc, rec):
            if hit is None or i < hit_idx:
                hit, hit_idx = rec, i
            continue
        if not is_open:
            continue
        client = rec["client_id"]
        if client is None or client in sc.attacker_clients:
            tag = f"{rec['detector']}@{'model' if client is None else 'attacker'}"
            also[tag] += 1
            also_first[tag] = min(also_first.get(tag, i - onset), i - onset)
        else:
            false_alarms.append(_brief(rec))
    out: dict[str, Any] = {
        "detected": hit is not None,
        "delay_events": None,
        "delay_attacker_queries": None,
        "delay_s": None,
        "trigger": None,
        "false_alarms": len(false_alarms),
        "benign_events": int(benign),
        "false_alarms_per_million": round(len(false_alarms) / max(benign, 1) * 1e6, 3),
        "false_alarms_by_detector": dict(sorted(Counter(
            f["detector"] + (f"/{f['signal']}" if "signal" in f else "") for f in false_alarms
        ).items())),
        "false_alarm_records": false_alarms[:10],
        "also_fired": dict(sorted(also.items())),
        "also_fired_first_delay_events": dict(sorted(also_first.items())),
        "records": dict(sorted(Counter(f"{r['detector']}/{r['status']}" for r in records).items())),
    }
    if hit is not None and onset is not None and sc.onset_ms is not None:
        out["delay_events"] = int(hit_idx - onset)
        out["delay_s"] = round((int(full.ts[hit_idx]) - sc.onset_ms) / 1000.0, 3)
        if sc.attacker_clients:
            out["delay_attacker_queries"] = int(att_cum[hit_idx])
        out["trigger"] = _brief(hit)
    return out


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sample Kolmogorov-Smirnov distance."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.abs(fa - fb).max())


def effect_size(sc: Scenario, full: EventBlock, cfg: DetectorConfig) -> dict[str, Any] | None:
    """How far the post-onset traffic really is from the reference, against the thresholds.

    The largest exact KS distance over features and over confidence statistics between
    the reference and everything after the onset (for model-level scenarios), next to the
    detectors' calibrated thresholds: an effect below its threshold can only be caught by
    a chance fluctuation of the window.
    """
    if sc.onset_index is None or sc.attacker_clients:
        return None
    post = full.take(slice(sc.onset_index, None))
    n_ref = len(sc.reference)
    feat = [_ks(sc.reference.X[:, j], post.X[:, j]) for j in range(full.X.shape[1])]
    R = score_summaries(sc.reference.scores, sc.reference.confidence)
    P = score_summaries(post.scores, post.confidence)
    summ = [_ks(R[:, j], P[:, j]) for j in range(R.shape[1])]
    thr_f = ks_threshold(cfg.window, n_ref, alpha_per_check(cfg.step, cfg.budget_events, len(feat)))
    thr_c = ks_threshold(cfg.window, n_ref, alpha_per_check(cfg.step, cfg.budget_events, len(summ)))
    return {
        "max_feature_ks": round(max(feat), 4),
        "features_over_threshold": int(sum(k > thr_f for k in feat)),
        "feature_ks_threshold": round(thr_f, 4),
        "max_confidence_ks": round(max(summ), 4),
        "confidence_ks_threshold": round(thr_c, 4),
        "mean_confidence": [round(float(sc.reference.confidence.mean()), 4),
                            round(float(post.confidence.mean()), 4)],
    }


# --------------------------------------------------------------------------------------
# river
# --------------------------------------------------------------------------------------
def _river_matrix(
    sc: Scenario, full: EventBlock, stop: int
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The first ``stop`` events' series and the reference, standardised on the reference."""
    if sc.river_series == "confidence":
        M, R, names = full.confidence[:stop, None], sc.reference.confidence[:, None], ["confidence"]
    else:
        M, R = full.X[:stop], sc.reference.X
        names = [f"f{j}" for j in range(M.shape[1])]
    R = R.astype(np.float64)
    mu, sd = R.mean(axis=0), R.std(axis=0)
    sd[sd == 0] = 1.0
    return (M.astype(np.float64) - mu) / sd, names, (R - mu) / sd


def _alarm_indices(factory, Z: np.ndarray, start: int, onset: int | None) -> np.ndarray:
    """Global indices where any column's detector fired (columns run independently).

    Every alarm before ``onset`` is returned, and after it only the earliest (all that the
    delay needs): a column stops at its first alarm at or after the onset, and no column
    runs past the earliest such alarm found so far. Without an onset every alarm counts.
    """
    hits: set[int] = set()
    first_post: int | None = None
    for j in range(Z.shape[1]):
        col = Z[:, j]
        if col.size and col.min() == col.max():
            continue  # a constant column cannot fire any of them
        if first_post is not None:
            col = col[: first_post - start]
        det = factory()
        for i, v in enumerate(col.tolist()):
            det.update(v)
            if det.drift_detected:
                if onset is not None and start + i >= onset:
                    first_post = start + i
                    break
                hits.add(start + i)
    if first_post is not None:
        hits.add(first_post)
    return np.array(sorted(hits), dtype=np.int64)


def _score_alarms(
    sc: Scenario, full: EventBlock, alarms: np.ndarray, start: int, end: int,
    columns: list[str], seconds: float, note: str = "",
) -> dict[str, Any]:
    onset = sc.onset_index
    if onset is None:
        pre, post, benign = alarms, alarms[:0], end - start
    else:
        pre, post, benign = alarms[alarms < onset], alarms[alarms >= onset], onset - start
    out: dict[str, Any] = {
        "detected": bool(post.size) if onset is not None else None,
        "delay_events": None,
        "delay_s": None,
        "false_alarms": int(pre.size),
        "benign_events": int(benign),
        "false_alarms_per_million": round(pre.size / max(benign, 1) * 1e6, 1),
        "events": int(end - start),
        "columns": columns if len(columns) <= 8 else f"all {len(columns)}",
        "seconds": round(seconds, 2),
    }
    if note:
        out["note"] = note
    if post.size and onset is not None and sc.onset_ms is not None:
        out["delay_events"] = int(post[0] - onset)
        out["delay_s"] = round((int(full.ts[post[0]]) - sc.onset_ms) / 1000.0, 3)
    return out


def run_river(
    sc: Scenario, full: EventBlock, size: str, seed: int, budget_events: float,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """river's ADWIN, KSWIN and PageHinkley on the scenario's series (None if n/a).

    Each runs with default parameters (``ADWIN``, ...) and calibrated to inferwatch's
    false-alarm budget of one per ``budget_events`` benign events (``ADWIN @budget``, ...;
    :mod:`benchmarks.river_calibration`). Returns the results by detector and the
    calibration (parameters, simulated events, seconds).
    """
    if sc.river_series is None:
        return None, None
    from river import drift

    caps = RIVER_CAPS[size]
    onset = sc.onset_index
    n = len(full) if onset is not None else min(len(full), caps["river_population_events"])
    Z, names, R = _river_matrix(sc, full, n)
    rng = np.random.default_rng([seed, zlib.crc32(sc.name.encode()), _CALIBRATION_RNG_TAG])
    cal = calibrate(R, caps["calibration_events"], budget_events, rng)
    ph_thr, ad_delta = cal["PageHinkley"]["threshold"], cal["ADWIN"]["delta"]
    kw_alpha = cal["KSWIN"]["alpha"]
    out: dict[str, Any] = {}
    runs = (
        ("ADWIN", drift.ADWIN, ""),
        ("PageHinkley", drift.PageHinkley, ""),
        ("ADWIN" + BUDGET_SUFFIX, lambda: drift.ADWIN(delta=ad_delta), f"delta={ad_delta:.3g}"),
        ("PageHinkley" + BUDGET_SUFFIX, lambda: drift.PageHinkley(threshold=ph_thr),
         f"threshold={ph_thr:.4g}"),
    )
    for name, factory, note in runs:
        t0 = time.perf_counter()
        alarms = _alarm_indices(factory, Z, 0, onset)
        out[name] = _score_alarms(sc, full, alarms, 0, n, names, time.perf_counter() - t0,
                                  note)
    # KSWIN: a capped segment and the most-moved columns.
    k, half = caps["kswin_columns"], caps["kswin_events"]
    if onset is None:
        lo, hi = 0, min(n, 2 * half)
        cols = list(range(min(k, Z.shape[1])))
        note = f"first {hi} events, first {len(cols)} column(s)"
    else:
        lo, hi = max(0, onset - half), min(n, onset + half)
        moved = np.abs(Z[onset:hi].mean(axis=0)) + np.abs(Z[onset:hi].std(axis=0) - 1.0)
        cols = [int(j) for j in np.argsort(-moved, kind="stable")[:k]]
        note = (f"events [{lo}, {hi}), the {len(cols)} most-moved column(s) after onset "
                "(oracle choice)")
    for name, alpha, extra in (("KSWIN", None, ""),
                               ("KSWIN" + BUDGET_SUFFIX, kw_alpha, f"; alpha={kw_alpha:.3g}")):
        def factory(alpha: float | None = alpha) -> Any:
            if alpha is None:
                return drift.KSWIN(seed=seed)
            return drift.KSWIN(alpha=alpha, seed=seed)

        t0 = time.perf_counter()
        alarms = _alarm_indices(factory, Z[lo:hi][:, cols], lo, onset)
        out[name] = _score_alarms(sc, full, alarms, lo, hi, [names[j] for j in cols],
                                  time.perf_counter() - t0, note + extra)
    order = RIVER_DETECTORS + RIVER_BUDGET_DETECTORS
    return {name: out[name] for name in order}, cal


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def run_scenario(
    sc: Scenario, cfg: DetectorConfig, block_size: int, size: str, seed: int,
    river: bool = True,
) -> dict[str, Any]:
    full = sc.concat()
    records, engine_stats = run_engine(sc, cfg, block_size, full)
    t0 = time.perf_counter()
    river_out, river_cal = (run_river(sc, full, size, seed, cfg.budget_events) if river
                            else (None, None))
    river_s = time.perf_counter() - t0
    return {
        "name": sc.name,
        "family": sc.family,
        "tier": sc.tier,
        "expected_detector": sc.expected_detector,
        "events": len(full),
        "reference_events": len(sc.reference),
        "onset_index": sc.onset_index,
        "onset_ms": sc.onset_ms,
        "attacker_clients": sorted(sc.attacker_clients),
        "clients": int(np.unique(full.client_id.astype(str)).size),
        "duration_s": round((int(full.ts[-1]) - int(full.ts[0])) / 1000.0, 1),
        "model": f"{full.model_id}@{full.model_version}",
        "notes": sc.notes,
        "params": sc.params,
        "effect": effect_size(sc, full, cfg),
        "inferwatch": evaluate(sc, full, records),
        "engine": engine_stats,
        "river": river_out,
        "river_calibration": river_cal,
        "river_seconds": round(river_s, 2),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    benign = sum(r["inferwatch"]["benign_events"] for r in rows)
    fa = sum(r["inferwatch"]["false_alarms"] for r in rows)
    by_tier: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["onset_index"] is None:
            continue
        t = by_tier.setdefault(r["tier"], {"scenarios": 0, "detected": 0})
        t["scenarios"] += 1
        t["detected"] += int(r["inferwatch"]["detected"])
    by_det: Counter = Counter()
    for r in rows:
        for k, v in r["inferwatch"]["false_alarms_by_detector"].items():
            by_det[k.split("/")[0]] += v
    missed = [r["name"] for r in rows
              if r["onset_index"] is not None and not r["inferwatch"]["detected"]]
    return {
        "drift_delay": drift_delays(rows),
        "river_false_alarms": river_false_alarms(rows),
        "scenarios": len(rows),
        "benign_events": benign,
        "false_alarms": fa,
        "false_alarms_per_million": round(fa / max(benign, 1) * 1e6, 3),
        "false_alarms_by_detector": dict(sorted(by_det.items())),
        "detected_by_tier": by_tier,
        "missed": missed,
    }


def river_false_alarms(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each river detector's false alarms over all the benign events it saw.

    Benign events: before the onset of every model-level scenario river runs on, and the
    benign population's capped stream (KSWIN: its capped segments). The at-budget
    detectors should stay near one per million here, as inferwatch does.
    """
    out: dict[str, Any] = {}
    for name in RIVER_DETECTORS + RIVER_BUDGET_DETECTORS:
        res = [r["river"][name] for r in rows if r["river"] and name in r["river"]]
        if not res:
            continue
        fa = sum(x["false_alarms"] for x in res)
        benign = sum(x["benign_events"] for x in res)
        out[name] = {"false_alarms": fa, "benign_events": benign,
                     "false_alarms_per_million": round(fa / max(benign, 1) * 1e6, 1)}
    return out


def drift_delays(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median detection delay (events) over the core drift scenarios, per detector.

    A miss counts as an infinite delay (so a detector that misses half the scenarios has
    an infinite median). Next to each river detector: its false alarms per million benign
    events over the same scenarios, since a detector that alarms often also 'detects' fast.
    """
    drift = [r for r in rows if r["family"] == "drift" and r["tier"] == "core"
             and r["onset_index"] is not None]
    if not drift:
        return {}

    def med(values: list[float]) -> float:
        return float(np.median(values)) if values else math.nan

    out: dict[str, Any] = {
        "scenarios": [r["name"] for r in drift],
        "inferwatch": {
            "median_delay_events": med([r["inferwatch"]["delay_events"]
                                        if r["inferwatch"]["detected"] else math.inf
                                        for r in drift]),
            "delays": [r["inferwatch"]["delay_events"] for r in drift],
            "false_alarms_per_million": round(
                sum(r["inferwatch"]["false_alarms"] for r in drift)
                / max(sum(r["inferwatch"]["benign_events"] for r in drift), 1) * 1e6, 3),
        },
    }
    for name in RIVER_DETECTORS + RIVER_BUDGET_DETECTORS:
        res = [(r["river"] or {}).get(name) for r in drift]
        if any(x is None for x in res):
            continue
        fa = sum(x["false_alarms"] for x in res)
        benign = sum(x["benign_events"] for x in res)
        out[name] = {
            "median_delay_events": med([x["delay_events"] if x["detected"] else math.inf
                                        for x in res]),
            "delays": [x["delay_events"] for x in res],
            "false_alarms_per_million": round(fa / max(benign, 1) * 1e6, 1),
        }
    return out


def _fmt(x: float | int | None, digits: int = 1) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and not math.isfinite(x):
        return "∞"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{digits}f}"


def _river_cell(res: dict[str, Any] | None) -> str:
    if res is None:
        return "n/a"
    fa = f"FA/M {_fmt(res['false_alarms_per_million'], 0)}"
    if res["detected"] is None:
        return fa
    if not res["detected"]:
        return f"miss · {fa}"
    return f"{_fmt(res['delay_events'])} ev · {fa}"


def _effect_cell(row: dict[str, Any]) -> str:
    e = row.get("effect")
    if not e:
        return "—"
    if row["expected_detector"] == "confidence_shift":
        return f"conf {e['max_confidence_ks']:.3f} / {e['confidence_ks_threshold']:.3f}"
    return f"feat {e['max_feature_ks']:.3f} / {e['feature_ks_threshold']:.3f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table plus a legend."""
    head = (
        "| scenario | tier | expected | detected | delay ev | delay atk q | delay s "
        "| FA | FA/M benign | also fired | effect KS / thr | "
        + " | ".join(f"river {d}" for d in RIVER_DETECTORS + RIVER_BUDGET_DETECTORS) + " |"
    )
    lines = [
        f"# inferwatch quality report ({report['size']}, seed {report['seed']})",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for r in report["scenarios"]:
        iw = r["inferwatch"]
        river = r["river"] or {}
        det = "—" if r["onset_index"] is None else ("yes" if iw["detected"] else "**no**")
        first = iw["also_fired_first_delay_events"]
        also = ", ".join(f"{k} ×{v} (first +{first[k]:,})" for k, v in iw["also_fired"].items())
        by = Counter()
        for k, v in iw["false_alarms_by_detector"].items():
            by[k.split("/")[0]] += v
        fa = _fmt(iw["false_alarms"])
        if by:
            fa += " (" + ", ".join(f"{k} {v}" for k, v in sorted(by.items())) + ")"
        cells = [
            r["name"], r["tier"], r["expected_detector"] or "none", det,
            _fmt(iw["delay_events"]), _fmt(iw["delay_attacker_queries"]), _fmt(iw["delay_s"]),
            fa, _fmt(iw["false_alarms_per_million"], 2), also, _effect_cell(r),
        ]
        cells += [_river_cell(river.get(d)) if r["river"] else "n/a"
                  for d in RIVER_DETECTORS + RIVER_BUDGET_DETECTORS]
        lines.append("| " + " | ".join(cells) + " |")
    s = report["summary"]
    lines += [
        "",
        f"inferwatch over all scenarios: {s['false_alarms']} false alarm(s) in "
        f"{s['benign_events']:,} benign events ({s['false_alarms_per_million']:.3f} per "
        f"million; by detector: "
        + (", ".join(f"{k} {v}" for k, v in s["false_alarms_by_detector"].items()) or "none")
        + "); detected by tier: "
        + ", ".join(f"{t} {v['detected']}/{v['scenarios']}"
                    for t, v in sorted(s["detected_by_tier"].items()))
        + (f"; missed: {', '.join(s['missed'])}" if s["missed"] else "") + ".",
        "",
    ]
    dd = s.get("drift_delay") or {}
    if dd:
        parts = [f"{k} {_fmt(v['median_delay_events'])} "
                 f"(FA/M {_fmt(v['false_alarms_per_million'], 2 if k == 'inferwatch' else 0)})"
                 for k, v in dd.items() if k != "scenarios"]
        lines += [f"Median drift delay (events) over the {len(dd['scenarios'])} core drift "
                  "scenarios: " + ", ".join(parts) + ".", ""]
        iw = dd["inferwatch"]["median_delay_events"]
        verdicts = []
        for name in RIVER_BUDGET_DETECTORS:
            if name in dd:
                other = dd[name]["median_delay_events"]
                word = "beats" if iw < other else ("ties" if iw == other else "loses to")
                verdicts.append(f"{word} {name} ({_fmt(iw)} vs {_fmt(other)})")
        if verdicts:
            lines += ["At the same false-alarm budget, inferwatch's median drift delay "
                      + ", ".join(verdicts) + ".", ""]
    rfa = s.get("river_false_alarms") or {}
    if rfa:
        lines += ["river false alarms over all benign events each saw: "
                  + ", ".join(f"{k} {v['false_alarms']:,} in {v['benign_events']:,} "
                              f"(FA/M {_fmt(v['false_alarms_per_million'], 1)})"
                              for k, v in rfa.items()) + ".", ""]
    cals = [(r["name"], r["river_calibration"]) for r in report["scenarios"]
            if r.get("river_calibration")]
    if cals:
        c0 = cals[0][1]
        lines += [f"river at the budget (one false alarm per {c0['budget_events']:,.0f} "
                  f"benign events per stream), calibrated on {c0['simulated_events']:,} events "
                  "bootstrapped from each scenario's standardised reference rows "
                  "(PageHinkley threshold: the largest statistic over all columns; ADWIN "
                  "delta: the smallest critical delta over all columns, checks and splits; "
                  "KSWIN alpha: 1 / (budget x columns), a union bound):", ""]
        lines += [f"- {name}: {c['columns']} column(s); PageHinkley threshold "
                  f"{c['PageHinkley']['threshold']:,.1f} (default 50); ADWIN delta "
                  f"{c['ADWIN']['delta']:.3g} (default 0.002); KSWIN alpha "
                  f"{c['KSWIN']['alpha']:.3g} (default 0.005); {c['seconds']:.1f} s"
                  for name, c in cals]
        lines += [""]
    lines += [
        "Legend: *delay ev* = trigger index − onset index (events of the model); *delay atk q*"
        " = attacker queries up to the trigger; *delay s* = event time from onset to trigger."
        " *FA* = open incidents before the onset, or after it on non-attacker clients, or any"
        " on benign-only data; *also fired* = model-level (or attacker) incidents of other"
        " detectors after the onset; *effect* = exact KS distance between the reference and"
        " all post-onset traffic (largest feature, or largest confidence statistic) / the"
        " detector's calibrated threshold. river columns: delay in events · false alarms per"
        " million benign events (default parameters, columns standardised on the reference; KSWIN"
        " capped to a segment around the onset and its most-moved columns, see quality.json);"
        " *@budget* = the same detector with its threshold / delta / alpha calibrated on the"
        " benign reference to at most one false alarm per 10⁶ benign events per stream"
        " (benchmarks/river_calibration.py; the quick size calibrates on fewer events)."
        " A detector with many false alarms also 'detects' by chance: compare its delay with"
        " 10⁶ / (FA/M). Tiers: core = asserted by the tests; stretch = reported (known"
        " limitation or detector not yet landed); control = invisible by construction.",
        "",
    ]
    return "\n".join(lines)


def run(
    size: str = "full", seed: int = 0, out_dir: str | Path = "bench-out",
    block_size: int = 5_000, only: list[str] | None = None, river: bool = True,
    progress=sys.stderr,
) -> dict[str, Any]:
    """Run every scenario; write ``quality.json``, ``quality.md`` and ``quality.png``."""
    cfg = DetectorConfig()
    names = [n for n in SCENARIOS if only is None or n in only]
    rows = []
    t_all = time.perf_counter()
    for k, name in enumerate(names, 1):
        t0 = time.perf_counter()
        sc = build(name, size, seed)
        gen_s = time.perf_counter() - t0
        row = run_scenario(sc, cfg, block_size, size, seed, river=river)
        row["generate_seconds"] = round(gen_s, 2)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
        iw = row["inferwatch"]
        if row["onset_index"] is None:
            verdict = "benign"
        elif iw["detected"]:
            verdict = (f"{sc.expected_detector} after {iw['delay_events']} events "
                       f"({iw['delay_s']} s)")
        else:
            verdict = f"{sc.expected_detector} NOT detected"
        print(
            f"[{k}/{len(names)}] {name}: {row['events']:,} events, {verdict}, "
            f"{iw['false_alarms']} false alarm(s) — {row['seconds']:.1f} s "
            f"(engine {row['engine']['seconds']:.1f} s, river {row['river_seconds']:.1f} s)",
            file=progress, flush=True,
        )
        del sc
    report = {
        "size": size,
        "seed": seed,
        "block_size": block_size,
        "config": asdict(cfg),
        "sizes": asdict(SIZES[size]),
        "river_caps": RIVER_CAPS[size],
        "seconds": round(time.perf_counter() - t_all, 1),
        "scenarios": rows,
        "summary": summarize(rows),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(report, indent=1, default=str) + "\n",
                                      encoding="utf-8")
    (out / "quality.md").write_text(markdown(report), encoding="utf-8")
    plot(report, out / "quality.png")
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    """Detection delay per labelled scenario: inferwatch next to river's detectors.

    One row per scenario with an onset; bars are events from onset to the first incident
    of the expected kind (log scale); a missed detection is drawn as an ``x`` at the
    right edge, so misses stand out instead of vanishing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["scenarios"] if r["onset_index"] is not None]
    series: list[tuple[str, str, list[float | None]]] = [
        ("inferwatch", "#2a6f97",
         [r["inferwatch"]["delay_events"] if r["inferwatch"]["detected"] else None
          for r in rows])]
    for name, color in (("ADWIN", "#d08c60"), ("PageHinkley", "#9b9b9b"),
                        ("KSWIN", "#7fb069")):
        vals = []
        for r in rows:
            res = (r.get("river") or {}).get(name)
            vals.append(res["delay_events"] if res and res.get("detected") else None)
        if any(v is not None for v in vals) or any((r.get("river") or {}).get(name)
                                                   for r in rows):
            series.append((f"river {name} (default)", color, vals))
    known = [v for _, _, vals in series for v in vals if v is not None]
    right = max(known or [1.0]) * 3.0
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) * len(series) / 2 + 1.6))
    h = 0.8 / len(series)
    y = np.arange(len(rows))
    for k, (label, color, vals) in enumerate(series):
        pos = y - 0.4 + h * (k + 0.5)
        ax.barh(pos, [max(v, 1.0) if v is not None else 0.0 for v in vals], h, color=color,
                label=label)
        miss = [p for p, v in zip(pos, vals, strict=True) if v is None]
        ax.plot([right] * len(miss), miss, "x", color=color, markersize=5)
    ax.set_xscale("log")
    ax.set_xlim(1.0, right * 1.5)
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("events from onset to detection (log scale; x at the right: missed)")
    ax.set_title(f"inferwatch detection delay on labelled scenarios ({report['size']})",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``inferwatch bench quality``: the labelled-scenario report."""
    ap = argparse.ArgumentParser(
        prog="inferwatch bench quality",
        description="Run the labelled scenarios (drift, confidence, flood, extraction, a "
        "benign diurnal population) through the detection core and river's drift "
        "detectors; write quality.json, quality.md and quality.png.",
        epilog="example: inferwatch bench quality --quick --out bench-out",
    )
    ap.add_argument("--quick", action="store_true", help="CI-sized scenarios (under a minute)")
    ap.add_argument("--out", default="bench-out", help="output directory (default bench-out/)")
    ap.add_argument("--seed", type=int, default=0, help="seed of every generator (default 0)")
    ap.add_argument("--block-size", type=int, default=5_000,
                    help="events per block fed to the engine (default 5000)")
    ap.add_argument("--only", nargs="+", metavar="SCENARIO", choices=sorted(SCENARIOS),
                    help="run only these scenarios")
    ap.add_argument("--no-river", action="store_true", help="skip river's detectors")
    args = ap.parse_args(argv)
    size = "quick" if args.quick else "full"
    t0 = time.perf_counter()
    report = run(size, args.seed, args.out, args.block_size, args.only, not args.no_river)
    print(markdown(report))
    print(f"wrote {Path(args.out) / 'quality.json'}, {Path(args.out) / 'quality.md'} and "
          f"{Path(args.out) / 'quality.png'} in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
