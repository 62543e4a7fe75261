"""``inferwatch bench scaleout --quick``: real workers, shards spread, a report written."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import scaleout


def test_scaleout_quick_writes_a_report(tmp_path: Path) -> None:
    assert scaleout.main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "scaleout.json").read_text())
    rows = report["results"]
    assert [(r["partitions"], r["workers"]) for r in rows] == scaleout.CONFIGS["quick"]
    for r in rows:
        assert r["events"] == report["size"]["events"] // 8 * 8
        assert r["events_per_s"] > 0
        assert sum(r["models_per_shard"].values()) == 8
    assert len(rows[-1]["models_per_shard"]) == 2  # both shards hold models: both work
    assert (tmp_path / "scaleout.md").exists() and (tmp_path / "scaleout.png").exists()
