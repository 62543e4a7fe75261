"""The quick labelled-scenario report: it runs in CI time and the core detectors keep their word.

``benchmarks.quality --quick`` runs every scenario of :mod:`benchmarks.scenarios` through
the detection core and river's drift detectors. These tests check the report's shape
(JSON and markdown, one row per scenario), that drift, confidence-shift and flood
scenarios are detected with finite delays, that the benign diurnal population raises no
drift, confidence or flood incident, and that the river baselines produced numbers, with
default parameters and calibrated to inferwatch's false-alarm budget (``@budget``). The
vectorised calibration statistics of :mod:`benchmarks.river_calibration` are checked
against river's own detectors: the calibrated parameter is exactly the no-alarm boundary.
Extraction is reported but not asserted yet (see ``tier`` in the scenarios).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import quality, river_calibration
from benchmarks.scenarios import SCENARIOS
from tests.benchmarks.conftest import BenchRun

CORE_DETECTORS = ("drift", "confidence_shift", "query_flood")


@pytest.fixture(scope="module")
def report(bench_quick: BenchRun) -> tuple[Path, dict, float]:
    """The quality part of the shared ``inferwatch bench --quick`` run."""
    return (bench_quick.out, bench_quick.report("quality"),
            bench_quick.bench_seconds("quality"))


def _rows(rep: dict) -> dict[str, dict]:
    return {r["name"]: r for r in rep["scenarios"]}


def test_quick_report_fits_ci(report: tuple[Path, dict, float]) -> None:
    assert report[2] < 90.0, f"quick report took {report[2]:.0f} s"


def test_json_and_markdown_have_a_row_per_scenario(report: tuple[Path, dict, float]) -> None:
    out, rep, _ = report
    assert rep["size"] == "quick"
    assert set(_rows(rep)) == set(SCENARIOS)
    md = (out / "quality.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(SCENARIOS)  # header + one row each
    for name in SCENARIOS:
        assert sum(line.startswith(f"| {name} |") for line in table) == 1, name


def test_core_drift_confidence_and_flood_are_detected(report: tuple[Path, dict, float]) -> None:
    rows = _rows(report[1])
    core = [r for r in rows.values()
            if r["tier"] == "core" and r["family"] in ("drift", "confidence", "flood")]
    assert {r["family"] for r in core} == {"drift", "confidence", "flood"}
    for r in core:
        iw = r["inferwatch"]
        assert iw["detected"], f"{r['name']}: {r['expected_detector']} not detected"
        assert iw["trigger"]["detector"] == r["expected_detector"]
        assert 0 <= iw["delay_events"] < r["events"] - r["onset_index"], r["name"]
        assert math.isfinite(iw["delay_s"]) and iw["delay_s"] >= 0, r["name"]
        if r["family"] == "flood":
            assert iw["trigger"]["client_id"] in r["attacker_clients"]
            assert 1 <= iw["delay_attacker_queries"] <= iw["delay_events"] + 1


def test_benign_population_raises_no_core_incident(report: tuple[Path, dict, float]) -> None:
    r = _rows(report[1])["benign_diurnal_population"]
    assert r["onset_index"] is None and r["events"] >= 90_000
    fa = r["inferwatch"]["false_alarms_by_detector"]
    assert not {k: v for k, v in fa.items() if k.split("/")[0] in CORE_DETECTORS}, fa
    # Nor anywhere else: before an onset, or on a client that is not the attacker.
    # (Extraction false alarms are reported in quality.md, not asserted yet.)
    for row in report[1]["scenarios"]:
        core = {k: v for k, v in row["inferwatch"]["false_alarms_by_detector"].items()
                if k.split("/")[0] in CORE_DETECTORS}
        assert not core, (row["name"], core)


def test_river_baselines_produced_numbers(report: tuple[Path, dict, float]) -> None:
    rows = [r for r in report[1]["scenarios"] if r["river"] is not None]
    assert {r["family"] for r in rows} >= {"drift", "confidence", "benign"}
    for r in rows:
        for det in quality.RIVER_DETECTORS + quality.RIVER_BUDGET_DETECTORS:
            res = r["river"][det]
            assert res["events"] > 0 and res["benign_events"] > 0, (r["name"], det)
            assert math.isfinite(res["false_alarms_per_million"]), (r["name"], det)
            if r["onset_index"] is not None:
                assert isinstance(res["detected"], bool)
                if res["detected"]:
                    assert res["delay_events"] >= 0
    # The per-client attacks are not something river's univariate detectors can key.
    assert all(r["river"] is None for r in report[1]["scenarios"]
               if r["family"] in ("flood", "extraction"))


def test_extraction_is_reported(report: tuple[Path, dict, float]) -> None:
    rows = [r for r in report[1]["scenarios"] if r["expected_detector"] == "extraction"]
    assert len(rows) == 5
    assert any(len(r["attacker_clients"]) >= 20 for r in rows)  # the sybil campaign
    for r in rows:
        assert isinstance(r["inferwatch"]["detected"], bool)


def test_river_at_budget_is_calibrated_and_summarised(report: tuple[Path, dict, float]) -> None:
    out, rep, _ = report
    assert rep["river_caps"]["calibration_events"] == river_calibration.QUICK_CALIBRATION_EVENTS
    for r in rep["scenarios"]:
        if r["river"] is None:
            assert r["river_calibration"] is None
            continue
        cal = r["river_calibration"]
        assert cal["simulated_events"] == river_calibration.QUICK_CALIBRATION_EVENTS
        assert cal["PageHinkley"]["threshold"] > 0
        assert 0 < cal["ADWIN"]["delta"] and 0 < cal["KSWIN"]["alpha"] < 1
        assert cal["KSWIN"]["alpha"] * cal["columns"] == pytest.approx(1e-6)
    dd = rep["summary"]["drift_delay"]
    for det in quality.RIVER_BUDGET_DETECTORS:
        assert det in dd and det in rep["summary"]["river_false_alarms"]
    md = (out / "quality.md").read_text()
    assert "river ADWIN @budget" in md and "At the same false-alarm budget" in md


def _first_alarm(detector, z: np.ndarray) -> int | None:
    for i, v in enumerate(z.tolist()):
        detector.update(v)
        if detector.drift_detected:
            return i
    return None


@pytest.mark.parametrize("kind", ["normal", "discrete"])
def test_calibration_matches_river_exactly(kind: str) -> None:
    """Just above the calibrated boundary river stays silent; just past it, it fires."""
    from river import drift

    rng = np.random.default_rng(3)
    n = 8_000
    z = (rng.standard_normal(n) if kind == "normal"
         else (rng.integers(0, 3, n) - 1.0) * 1.3)  # ties, as in discrete features
    stat = river_calibration.ph_statistic(z)
    top = float(stat.max())
    assert _first_alarm(drift.PageHinkley(threshold=top * (1 + 1e-9)), z) is None
    assert _first_alarm(drift.PageHinkley(threshold=top * (1 - 1e-6)), z) == int(stat.argmax())
    widths, splits = river_calibration.adwin_splits(n)
    delta = float(np.exp(river_calibration.adwin_min_log_delta(z, widths, splits)))
    assert _first_alarm(drift.ADWIN(delta=delta * (1 - 1e-6)), z) is None
    assert _first_alarm(drift.ADWIN(delta=delta * (1 + 1e-6)), z) is not None
