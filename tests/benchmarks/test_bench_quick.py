"""``inferwatch bench --quick``, the command CI and operators run, within its budget.

The shared run (``tests/benchmarks/conftest.py``) is the console command as typed: every
benchmark must finish, write its JSON, markdown table and PNG plot, and the whole run must
take under five minutes on the 2-core CI machine.
"""

from __future__ import annotations

from streams.cli import BENCHES
from tests.benchmarks.conftest import QUICK_BUDGET_S, BenchRun


def test_quick_run_fits_the_ci_budget(bench_quick: BenchRun) -> None:
    per_bench = {r["bench"]: r["seconds"] for r in bench_quick.summary["runs"]}
    assert bench_quick.seconds < QUICK_BUDGET_S, (
        f"inferwatch bench --quick took {bench_quick.seconds:.0f} s: {per_bench}")


def test_every_benchmark_ran_and_wrote_json_table_and_plot(bench_quick: BenchRun) -> None:
    runs = {r["bench"]: r for r in bench_quick.summary["runs"]}
    assert tuple(runs) == BENCHES
    assert bench_quick.summary["quick"] is True
    for name, run in runs.items():
        assert run["exit_code"] == 0, name
        for ext in ("json", "md", "png"):
            path = bench_quick.out / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
            assert path.name in run["files"], (name, run["files"])
        assert (bench_quick.out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
