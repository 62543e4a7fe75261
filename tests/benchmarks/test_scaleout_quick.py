"""``inferwatch bench scaleout --quick``: real workers, shards spread, a report written."""

from __future__ import annotations

from benchmarks import scaleout
from tests.benchmarks.conftest import BenchRun


def test_scaleout_quick_writes_a_report(bench_quick: BenchRun) -> None:
    report = bench_quick.report("scaleout")
    rows = report["results"]
    assert [(r["partitions"], r["workers"]) for r in rows] == scaleout.CONFIGS["quick"]
    for r in rows:
        assert r["events"] == report["size"]["events"] // 8 * 8
        assert r["events_per_s"] > 0
        assert sum(r["models_per_shard"].values()) == 8
    assert len(rows[-1]["models_per_shard"]) == 2  # both shards hold models: both work
    assert (bench_quick.out / "scaleout.md").exists()
    assert (bench_quick.out / "scaleout.png").exists()
