"""One ``inferwatch bench --quick`` run, shared by the benchmark tests.

The command operators and CI run is exercised as a subprocess, exactly as typed; the tests
of each benchmark then read the JSON, markdown and PNG files it wrote, and one test holds
the whole run to the CI budget.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The whole quick run must fit in this many seconds on the 2-core CI machine.
QUICK_BUDGET_S = 300.0


@dataclass(frozen=True)
class BenchRun:
    out: Path
    seconds: float
    summary: dict

    def report(self, stem: str) -> dict:
        return json.loads((self.out / f"{stem}.json").read_text(encoding="utf-8"))

    def bench_seconds(self, name: str) -> float:
        return next(r["seconds"] for r in self.summary["runs"] if r["bench"] == name)


@pytest.fixture(scope="session")
def bench_quick(tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    out = tmp_path_factory.mktemp("bench-quick")
    exe = shutil.which("inferwatch", path=str(Path(sys.executable).parent)) or \
        shutil.which("inferwatch")
    cmd = [exe] if exe else [sys.executable, "-m", "streams.cli"]
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "bench", "--quick", "--out", str(out)], env=dict(os.environ),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=2 * QUICK_BUDGET_S)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-6000:]
    summary = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    return BenchRun(out, seconds, summary)
