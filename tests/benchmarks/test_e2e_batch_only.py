"""``python -m benchmarks.e2e --batch-only``: the batch case alone, repeated, with a median.

Operators run it between two changes of the batch path; this runs it at a small size
through the real broker and a real worker process and checks the report, not a rate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_batch_only_repeats_the_batch_case(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "benchmarks.e2e", "--quick", "--batch-only", "--repeat", "2",
           "--events", "20000", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=dict(os.environ), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:]
    rep = json.loads((tmp_path / "e2e-batch.json").read_text(encoding="utf-8"))
    assert rep["mode"] == "batch-only" and rep["repeat"] == 2
    assert [c["name"] for c in rep["cases"]] == ["batch", "batch"]
    rates = [c["events_per_s"] for c in rep["cases"]]
    assert all(r > 0 for r in rates)
    assert min(rates) <= rep["median_events_per_s"] <= max(rates)
    for c in rep["cases"]:  # each fresh worker read the whole topic and ran every detector
        assert c["events"] == 20_000 and c["messages"] == 4
        assert set(c["kernel_seconds"]) == {"drift", "confidence_shift", "query_flood",
                                            "extraction"}
    md = (tmp_path / "e2e-batch.md").read_text(encoding="utf-8")
    assert "| 2 |" in md and "Median" in md
    assert not (tmp_path / "e2e.json").exists()  # the other cases did not run
