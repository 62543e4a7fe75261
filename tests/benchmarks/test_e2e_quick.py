"""The quick end-to-end benchmark: real broker, real worker processes, in CI time.

``inferwatch bench --quick`` (its e2e part, ``benchmarks.e2e --quick``) pre-loads small
topics, runs the worker on single-event JSON, single-event Avro and batch messages, the
naive Faust agent on the JSON topic, the latency run's traffic mix pre-loaded (its
maximum rate), and a short live run for event-to-incident latency. These tests check the
report's shape and that every measurement produced a number; they assert no target rate
or latency.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.benchmarks.conftest import BenchRun

CASES = {"single_json", "single_avro", "batch", "naive_json", "live_mix"}


@pytest.fixture(scope="module")
def report(bench_quick: BenchRun) -> tuple[Path, dict, float]:
    """The e2e part of the shared ``inferwatch bench --quick`` run."""
    return bench_quick.out, bench_quick.report("e2e"), bench_quick.bench_seconds("e2e")


def test_quick_run_fits_ci(report: tuple[Path, dict, float]) -> None:
    assert report[2] < 180.0, f"quick e2e benchmark took {report[2]:.0f} s"


def test_report_files_exist(report: tuple[Path, dict, float]) -> None:
    out, rep, _ = report
    assert rep["size"] == "quick"
    md = (out / "e2e.md").read_text()
    for name in CASES:
        assert f"| {name} |" in md, name
    assert "event -> incident" in md
    assert (out / "e2e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_case_has_a_positive_rate(report: tuple[Path, dict, float]) -> None:
    rep = report[1]
    cases = {c["name"]: c for c in rep["cases"]}
    assert set(cases) == CASES
    for name, c in cases.items():
        assert math.isfinite(c["events_per_s"]) and c["events_per_s"] > 0, name
        assert c["events"] > 0 and c["messages"] > 0 and c["bytes"] > 0, name
        assert c["rate_method"], name
    for name in ("single_json", "single_avro", "batch", "live_mix"):
        assert cases[name]["pipeline_events_per_s"] > 0, name
    assert cases["batch"]["messages"] < cases["batch"]["events"]
    ratio = rep["ratio_single_json_vs_naive"]
    assert math.isfinite(ratio) and ratio > 0


def test_latency_numbers_are_present(report: tuple[Path, dict, float]) -> None:
    lat = report[1]["latency"]
    assert lat["achieved_rate"] > 0 and lat["events"] > 0
    live_mix = next(c for c in report[1]["cases"] if c["name"] == "live_mix")
    assert lat["max_rate_on_this_traffic"] == round(live_mix["events_per_s"], 1)
    assert live_mix["incident_records"], "the mix carries floods, an attacker and drift"
    e2i = lat["event_to_incident_ms"]
    assert e2i["n"] >= 1, lat["records_by_status"]
    assert math.isfinite(e2i["p50"]) and e2i["p50"] >= 0
    assert e2i["p99"] is None or e2i["p99"] >= e2i["p50"]
    assert str(e2i["n"]) in lat["note"]  # the count is always stated
    for key in ("event_to_publish_ms", "publish_to_arrival_ms"):
        assert lat[key]["n"] == e2i["n"], key
