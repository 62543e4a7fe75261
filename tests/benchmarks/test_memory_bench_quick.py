"""The memory benchmark: per-client state stays within the documented budget and bounded.

A small run (50,000 distinct client ids through ``DetectionEngine.process``, small client
and extraction tables so both overflow many times over) must keep the engine's numpy
state within :func:`benchmarks.memory.documented_budget`, hold exactly as many bytes at the
end as half-way through, evict least recently seen clients where the tables overflow
(while the steady regular clients stay tracked), and write its JSON, markdown and PNG.
Process RSS is reported but not asserted: it depends on the allocator and the machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import memory
from detectors.config import DetectorConfig

CLIENTS = 50_000
CAPACITY = 1 << 12  # 4,096 client-table slots: 50,000 clients overflow it 12 times
EXTRACTION = 1 << 8


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("memory")
    rc = memory.main(["--out", str(out), "--clients", str(CLIENTS), "--features", "8",
                      "--block", "4000", "--client-capacity", str(CAPACITY),
                      "--extraction-capacity", str(EXTRACTION), "--in-process"])
    assert rc == 0
    return out, json.loads((out / "memory.json").read_text(encoding="utf-8"))


def test_outputs_written(report: tuple[Path, dict]) -> None:
    out, rep = report
    for ext in ("json", "md", "png"):
        path = out / f"memory.{ext}"
        assert path.is_file() and path.stat().st_size > 0, path
    assert (out / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "memory.md").read_text(encoding="utf-8")
    assert "Within budget:" in md and "| distinct clients |" in md
    assert rep["measured"]["distinct_clients"] == CLIENTS
    assert len(rep["measured"]["points"]) >= 10


def test_state_within_documented_budget(report: tuple[Path, dict]) -> None:
    rep = report[1]
    budget, state = rep["budget"], rep["measured"]["state"]
    assert state["total"] <= budget["state_total"]
    assert rep["verdict"]["state_within_budget"] is True
    # the per-client tables are exactly their documented size
    assert state["flood_client_table"] == budget["flood_client_table"]
    assert state["extraction_client_table"] == budget["extraction_client_table"]
    assert budget["flood_client_table"] == CAPACITY * rep["config"]["flood_bytes_per_slot"]


def test_state_bounded_from_half_way(report: tuple[Path, dict]) -> None:
    rep = report[1]
    pts = rep["measured"]["points"]
    half = next(p for p in pts if p["distinct_clients"] >= CLIENTS / 2)
    assert all(p["state_bytes"] == pts[0]["state_bytes"] for p in pts)
    assert pts[-1]["state_bytes"] == half["state_bytes"] == rep["measured"]["state"]["total"]
    assert rep["verdict"]["state_bounded"] is True
    for p in pts:
        assert p["rss_bytes"] > 0 and math.isfinite(p["events_per_s"]) and p["events_per_s"] > 0


def test_evictions_when_clients_exceed_capacity(report: tuple[Path, dict]) -> None:
    m = report[1]["measured"]
    assert m["flood_evictions"] >= CLIENTS - CAPACITY
    assert m["extraction_evictions"] >= CLIENTS - EXTRACTION
    evictions = [p["flood_evictions"] for p in m["points"]]
    assert evictions == sorted(evictions) and evictions[-1] > evictions[0]
    # least recently seen go first: the steady regular clients survive the id rotation
    assert m["regulars_tracked"]["flood"] >= 0.99
    assert report[1]["verdict"]["evictions_as_expected"] is True


def test_budget_reads_the_detector_constants() -> None:
    cfg = DetectorConfig()
    b = memory.documented_budget(cfg, n_features=32, n_classes=3)
    from detectors.extraction import bytes_per_client
    from detectors.flood import FloodDetector

    assert b["flood_client_table"] == cfg.client_capacity * FloodDetector.bytes_per_client(3)
    assert b["extraction_client_table"] == cfg.extraction_capacity * bytes_per_client(32)
    doubled = memory.documented_budget(
        DetectorConfig(client_capacity=2 * cfg.client_capacity), 32, 3)
    assert doubled["flood_client_table"] == 2 * b["flood_client_table"]
