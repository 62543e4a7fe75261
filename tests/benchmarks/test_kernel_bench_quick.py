"""The quick throughput benchmarks run, write their reports, and measure what they claim.

``benchmarks.kernels --quick`` and ``benchmarks.sweeps --quick`` run in CI time. These
tests check the outputs (JSON, markdown, PNG), that every measured rate is a positive
finite number, that the ratios against river and plain numpy are computed, that the
numpy reference implementation computes the numba kernel's statistic, and that numba's
on-disk cache makes the first call in a fresh process faster than a cold compile. The
ratios themselves are not asserted: CI machines are too noisy for that.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.conftest import BenchRun

RATIOS = (
    "numba_ks_vs_river_adwin",
    "numba_ks_vs_river_pagehinkley",
    "numba_ks_vs_river_kswin",
    "numba_ks_vs_numpy_ks",
    "numba_adwin_vs_river_adwin",
)
MEASURED = {
    "numba_window_ks", "drift", "confidence", "flood", "extraction", "numba_adwin", "engine",
    "river_adwin", "river_pagehinkley", "river_kswin", "numpy_window_ks",
}


def _positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def kernel_report(bench_quick: BenchRun) -> tuple[Path, dict]:
    """The kernels part of the shared ``inferwatch bench --quick`` run."""
    return bench_quick.out, bench_quick.report("kernels")


@pytest.fixture(scope="module")
def sweep_report(bench_quick: BenchRun) -> tuple[Path, dict]:
    """The sweeps part of the shared ``inferwatch bench --quick`` run."""
    return bench_quick.out, bench_quick.report("sweeps")


def _assert_outputs(out: Path, stem: str) -> None:
    for ext in ("json", "md", "png"):
        path = out / f"{stem}.{ext}"
        assert path.is_file() and path.stat().st_size > 0, path
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kernel_outputs_and_rates(kernel_report: tuple[Path, dict]) -> None:
    out, rep = kernel_report
    _assert_outputs(out, "kernels")
    ms = {m["name"]: m for m in rep["measurements"]}
    assert MEASURED <= set(ms)
    for m in ms.values():
        for key in ("seconds", "events_per_s", "feature_updates_per_s", "us_per_event"):
            assert _positive(m[key]), (m["name"], key, m[key])
        assert m["events"] > 0 and m["runs"] >= 1
    md = (out / "kernels.md").read_text(encoding="utf-8")
    assert "| operator |" in md and "feature-updates/s" in md


def test_kernel_ratios_are_computed(kernel_report: tuple[Path, dict]) -> None:
    out, rep = kernel_report
    md = (out / "kernels.md").read_text(encoding="utf-8")
    for key in RATIOS:
        assert _positive(rep["ratios"].get(key)), key
        assert key in md


def test_numpy_reference_computes_the_kernel_statistic(kernel_report: tuple[Path, dict]) -> None:
    assert kernel_report[1]["checks"]["numpy_ks_matches_numba"] is True


def test_on_disk_cache_removes_compile_time(kernel_report: tuple[Path, dict]) -> None:
    comp = kernel_report[1]["compile"]
    cold, warm = comp["cold"], comp["warm"]
    assert comp["cache_files_written"] > 0
    for side in (cold, warm):
        assert _positive(side["first_call_s"]) and _positive(side["second_call_s"])
    assert warm["first_call_s"] < cold["first_call_s"]


def test_sweeps_outputs_and_rates(sweep_report: tuple[Path, dict]) -> None:
    out, rep = sweep_report
    _assert_outputs(out, "sweeps")
    assert set(rep["sweeps"]) == {"batch_size", "window", "features"}
    for name, sw in rep["sweeps"].items():
        assert len(sw["points"]) >= 3, name
        xs = [p[name] for p in sw["points"]]
        assert sw["knee"] in xs
        for p in sw["points"]:
            assert _positive(p["events_per_s"]) and _positive(p["feature_updates_per_s"]), p
    md = (out / "sweeps.md").read_text(encoding="utf-8")
    assert md.count("knee at") == 3
