"""Memory under a million distinct clients: measured against the documented budget.

Why: client ids are attacker-controlled, so an unbounded per-client map is a memory
exhaustion attack (rotate the id on every query). The detection core claims fixed,
preallocated per-client tables with least-recently-seen eviction, and a per-model state
that depends only on the configuration. This benchmark feeds
:meth:`DetectionEngine.process <detectors.engine.DetectionEngine.process>` (every
detector, baseline from :func:`benchmarks.synthetic.make_block`, ``DetectorConfig()``
defaults unless told otherwise) a seeded stream in which ``--clients`` distinct client ids
appear (1,000,000; 100,000 with ``--quick``), 32 features, event time increasing, in
blocks of 10,000 events. Half of every block comes from ids never seen before (one query
each, the id-rotation attack), half from a fixed pool of 1,000 regular clients, so the
run also shows whom eviction removes: the regulars should still be tracked at the end.

Measured at 20 checkpoints (distinct clients seen):

- **RSS**: the process's resident set (``VmRSS`` in ``/proc/self/status``) minus its value
  just before the engine was built, and the peak (``VmHWM``, reset through
  ``/proc/self/clear_refs`` after the warm-up so it covers the run only; without that the
  largest sampled RSS). RSS, not tracemalloc: numba kernels' and numpy's allocations are
  not reliably visible to tracemalloc, and RSS is what an operator's limit applies to.
  The tables are allocated zeroed, so their pages become resident as slots are first
  used (hashing spreads clients over every page, so within some ten thousand clients);
  after that RSS must stay flat however many clients come.
- **state bytes**: the ``nbytes`` of every numpy array held by the engine's detector
  objects (walked recursively, each buffer once). Preallocated, so constant.
- **evictions** from the flood and extraction tables, their occupancy, and events/s
  (time inside ``DetectionEngine.process`` only; generating the stream is not timed).

The **documented budget** (:func:`documented_budget`) evaluates the README's formulas
from the detector modules' own constants and the config, so a change of a slot layout
moves the budget with it: the detector state per model, plus per process the bounded
client-key cache of :mod:`detectors.client_table` and a measured working-set allowance
(engine build, block in flight). The run reports whether the engine's state stays within
the state budget and the peak RSS growth within the whole. Nothing is asserted here (the
test does that on a small run).

The measurement runs in a fresh interpreter (``--in-process`` to skip that), so memory
freed by earlier benchmarks of ``inferwatch bench all`` cannot hide growth, and the numba
kernels are loaded by a small warm-up engine before the baseline sample.

``python -m benchmarks.memory [--quick] [--out DIR] [--clients N]`` writes ``memory.json``,
``memory.md`` and ``memory.png`` to ``DIR`` (default ``bench-out/``).

>>> b = documented_budget(DetectorConfig(), n_features=32, n_classes=3)
>>> b["flood_client_table"] == DetectorConfig().client_capacity * FloodDetector.bytes_per_client(3)
True
>>> per_model = ("flood_client_table", "extraction_client_table", "windows", "whitened_shift",
...              "sybil_population", "extraction_calibration", "baseline_tables")
>>> b["state_total"] == sum(b[k] for k in per_model)
True
>>> b["total"] == b["state_total"] + b["client_key_cache"] + b["working_set"]
True
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numba
import numpy as np

from benchmarks.kernels import REF_EVENTS, fmt_rate, progress
from benchmarks.synthetic import make_block
from detectors import client_table, extraction
from detectors.baseline import SAMPLE_ROWS, Profile
from detectors.block import EventBlock
from detectors.client_table import client_hashes
from detectors.config import DetectorConfig
from detectors.engine import DetectionEngine
from detectors.extraction import ExtractionDetector
from detectors.flood import BYTES_PER_SCALE, BYTES_PER_SLOT_BASE, FloodDetector
from detectors.whitened import window_scales

ROOT = Path(__file__).resolve().parents[1]
FULL_CLIENTS = 1_000_000
QUICK_CLIENTS = 100_000
FEATURES = 32
CLASSES = 3
BLOCK = 10_000
#: Share of each block's events sent by never-seen client ids (the rest: regular clients).
NEW_SHARE = 0.5
REGULARS = 1_000
CHECKPOINTS = 20
#: Events of the warm-up engine: enough to run every kernel once (kernels are loaded on
#: their first call), few enough that its freed buffers cannot hide the stream's own.
WARMUP_EVENTS = 2_000
#: The per-column baseline tables (bin edges, shares, normal scores, bin counts, transposed
#: blocks) kept by the window, CUSUM, whitened and extraction kernels: at most this many
#: ``(bins + 2)``-wide float64 rows per column (about 12 today).
TABLE_ROWS_PER_COLUMN = 16
#: Working memory the allocator holds besides the state: the detectors' calibration when
#: a model's engine is built (simulated clients; 9 to 18 MB measured for 8 to 128 features)
#: and the block being processed (the block, its decoding temporaries, the detectors'
#: per-block outputs), which reuses that memory afterwards. Allowances measured with this
#: benchmark over blocks of 1,000 to 50,000 events and 8 to 128 features: a fixed part and a
#: part per event of the block, flat once the first blocks have run.
WORKING_FIXED = 16 * 1024 * 1024
WORKING_PER_EVENT = 512
WORKING_PER_EVENT_FEATURE = 24
#: Bytes per entry of the process-wide client-key cache besides the id string itself (dict
#: slot, the 64-bit key as a Python int, the str object header), measured with
#: :func:`python_bytes`; the id's characters come on top.
KEY_CACHE_ENTRY_BYTES = 120
#: Client id length the budget assumes (a UUID's 36 characters).
ID_BYTES = 36
MB = 1024 * 1024


# -- the budget ------------------------------------------------------------------------------


def documented_budget(
    cfg: DetectorConfig, n_features: int, n_classes: int, block: int = BLOCK,
    id_bytes: int = ID_BYTES,
) -> dict[str, int]:
    """Bytes per component of one model's detector state, from the README's formulas.

    Every term reads the constants of the module that allocates it (slot layouts, history
    lengths, population window) and the config, so it follows the code. Per model, with
    ``d`` features, ``c`` confidence statistics (3 with class scores, else 1), window ``W``,
    test step ``s`` and ``b`` bins:

    - ``flood_client_table``: ``client_capacity x (BYTES_PER_SLOT_BASE + BYTES_PER_SCALE x
      scales)`` (:mod:`detectors.flood`; 92 bytes with 3 scales when this was written);
    - ``extraction_client_table``: ``extraction_capacity x bytes_per_client(d)``
      (about 5.5 kB + 8 bytes per feature);
    - ``windows``: per window over ``k`` columns (``d`` features, ``c`` statistics) a ring
      of ``W x k x 4 + W x 8`` bytes and ``W / s + 2`` snapshots of ``k x (b + 2) x 8``;
    - ``whitened_shift``: ring of the longest window length ``R <= W``:
      ``R x d x 8 + R x 8``, plus ``d^2 x 16`` of whitening matrices;
    - ``sybil_population``: the model's last ``POPULATION`` events (24 bytes each) and
      ``GLOBAL`` projected recent queries;
    - ``extraction_calibration``: binomial threshold grid, Shapiro-Wilk coefficients and
      the random projection;
    - ``baseline_tables``: at most ``TABLE_ROWS_PER_COLUMN x (d + c) x (b + 2) x 8``;

    their sum is ``state_total``. Per process (all models together) come on top:
    ``client_key_cache``, the bounded cache of client-id hashes
    (``KEY_CACHE_ENTRIES x (KEY_CACHE_ENTRY_BYTES + id_bytes)``), and
    ``working_set``, what building the engine and processing one block of ``block`` events
    take (``WORKING_FIXED + block x (WORKING_PER_EVENT + WORKING_PER_EVENT_FEATURE x d)``);
    ``total`` (one model) is what process RSS may grow by. The baseline profile itself
    (``baseline_profile``: reference sample rows as Python floats, 32 bytes per value) is
    listed but not in ``total``: it is loaded before the engine exists.
    """
    d = int(n_features)
    c = 3 if n_classes >= 2 else 1
    W, step, bins = cfg.window, max(cfg.step, 1), cfg.bins
    snapshots = W // step + 2
    R = max(window_scales(W, step))
    ex = extraction
    budget = {
        "flood_client_table": cfg.client_capacity
        * (BYTES_PER_SLOT_BASE + BYTES_PER_SCALE * len(cfg.flood_scales_ms)),
        "extraction_client_table": cfg.extraction_capacity * ex.bytes_per_client(d),
        "windows": sum(W * k * 4 + W * 8 + snapshots * k * (bins + 2) * 8 for k in (d, c)),
        "whitened_shift": R * d * 8 + R * 8 + 2 * d * d * 8,
        "sybil_population": ex.POPULATION * 24 + ex.GLOBAL * min(ex.GLOBAL_DIMS, d) * 4,
        "extraction_calibration": ex.P_GRID * (ex.FLAGS + 1) * 8
        + (ex.DISTANCES - ex.PRADA_MIN + 1) * ex.DISTANCES * 8 + d * min(ex.PROJ, d) * 8,
        "baseline_tables": TABLE_ROWS_PER_COLUMN * (d + c) * (bins + 2) * 8,
    }
    budget["state_total"] = sum(budget.values())
    budget["client_key_cache"] = getattr(client_table, "KEY_CACHE_ENTRIES", 0) * (
        KEY_CACHE_ENTRY_BYTES + id_bytes)
    budget["working_set"] = WORKING_FIXED + block * (
        WORKING_PER_EVENT + WORKING_PER_EVENT_FEATURE * d)
    budget["total"] = (budget["state_total"] + budget["client_key_cache"]
                       + budget["working_set"])
    # sample rows as lists of Python floats (8-byte pointer + 24-byte float each, plus the
    # row's list), and per column the bin edges and shares
    budget["baseline_profile"] = (SAMPLE_ROWS * (d * 32 + 64)
                                  + (d + c) * (bins + 2) * 2 * 32 + 4096)
    return budget


# -- what the engine holds -------------------------------------------------------------------


def _owner(a: np.ndarray) -> np.ndarray:
    """The array that owns ``a``'s buffer (views are counted once, through their owner)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def ndarray_bytes(obj: Any) -> int:
    """Bytes of the numpy arrays reachable from ``obj``, each buffer counted once.

    Walks attributes (``__dict__`` and ``__slots__``), lists, tuples, sets and dict values.
    Views count through the array owning their buffer. Baseline :class:`Profile` objects are
    skipped (plain Python lists, reported separately by :func:`python_bytes`), as are
    classes, modules and functions.
    """
    seen: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, _LEAVES):
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            own = _owner(o)
            if own is o or id(own) not in seen:
                seen.add(id(own))
                total += int(own.nbytes)
        elif isinstance(o, list | tuple | set | frozenset):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
        else:
            stack.extend(getattr(o, "__dict__", {}).values())
            stack.extend(getattr(o, name) for name in getattr(type(o), "__slots__", ())
                         if hasattr(o, name))
    return total


_LEAVES = (str, bytes, int, float, bool, type(None), Profile, type, types.ModuleType,
           types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def engine_state(eng: DetectionEngine) -> dict[str, Any]:
    """Numpy bytes held by each detector of each model, and the per-client table bytes."""
    per_detector: dict[str, int] = {}
    flood_table = extraction_table = 0
    for md in eng.models.values():
        for det in md.detectors:
            per_detector[det.name] = per_detector.get(det.name, 0) + ndarray_bytes(det)
            if isinstance(det, FloodDetector):
                flood_table += sum(a.nbytes for a in det.slot_arrays())
            elif isinstance(det, ExtractionDetector):
                st = det.state
                extraction_table += sum(a.nbytes for a in st.arrays()
                                        if a.ndim and a.shape[0] == st.capacity)
    total = sum(per_detector.values())
    return {
        "total": total,
        "per_detector": per_detector,
        "flood_client_table": flood_table,
        "extraction_client_table": extraction_table,
        "per_model_rest": total - flood_table - extraction_table,
        "open_incidents": len(eng.tracker.open),
    }


def python_bytes(obj: Any) -> int:
    """Deep ``sys.getsizeof`` of plain Python containers (a baseline profile's lists)."""
    seen: set[int] = set()
    stack = [obj]
    total = 0
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set):
            stack.extend(o)
        elif dataclasses.is_dataclass(o) and not isinstance(o, type):
            stack.extend(getattr(o, f.name) for f in dataclasses.fields(o))
    return total


def key_cache_entries() -> int:
    """Entries in the process-wide client-key cache of :mod:`detectors.client_table`."""
    cache = getattr(client_table, "_key_cache", {})
    return sum(len(v) for v in cache.values())


# -- process memory --------------------------------------------------------------------------


def proc_status() -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of this process in bytes (Linux); else ru_maxrss."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    if "VmRSS" not in out:  # no procfs: the lifetime peak is all there is
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak *= 1 if sys.platform == "darwin" else 1024
        out = {"VmRSS": peak, "VmHWM": peak}
    return out


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); whether that worked."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# -- the stream ------------------------------------------------------------------------------


def client_stream(
    n_clients: int, d: int, start_ms: int, block: int = BLOCK, new_share: float = NEW_SHARE,
    regulars: int = REGULARS, seed: int = 0,
) -> Iterator[tuple[EventBlock, int]]:
    """Blocks in which ``n_clients`` distinct client ids appear: regulars and one-shot ids.

    Yields ``(block, distinct_clients_seen_so_far)``. Features, scores and event times come
    from :func:`make_block` (benign, event time increasing across blocks); client ids are
    replaced: ``new_share`` of each block's rows (at random positions) get never-seen ids
    ``n-<k>``, one query each, the id-rotation attack; the others cycle through ``regulars``
    ids ``regular-<j>``, steady clients that eviction should keep.
    """
    regulars = min(regulars, n_clients)
    rng = np.random.default_rng(seed)
    per_block = max(1, int(round(block * new_share)))
    n_new_total = n_clients - regulars
    seen_new = reg_pos = b = 0
    t = start_ms
    while seen_new < n_new_total or reg_pos < regulars:
        n_new = min(per_block, n_new_total - seen_new)
        n = block if n_new == per_block else max(int(round(n_new / new_share)),
                                                 n_new + max(regulars - reg_pos, 1))
        if regulars == 0:
            n = n_new
        blk = make_block(n=n, d=d, seed=seed * 1_000_003 + b + 1, n_classes=CLASSES,
                         start_ms=t, id_prefix="m")
        is_new = np.zeros(n, dtype=bool)
        is_new[rng.choice(n, size=n_new, replace=False)] = True
        ids = np.empty(n, dtype=object)
        ids[is_new] = [f"n-{k}" for k in range(seen_new, seen_new + n_new)]
        n_reg = n - n_new
        ids[~is_new] = [f"regular-{j % regulars}" for j in range(reg_pos, reg_pos + n_reg)]
        blk.client_id = ids
        seen_new += n_new
        reg_pos += n_reg
        t = int(blk.ts[-1]) + 10
        b += 1
        yield blk, seen_new + min(reg_pos, regulars)


def _warm_kernels(d: int) -> None:
    """Load every compiled kernel with a tiny engine, so loading is not counted as state."""
    cfg = DetectorConfig(client_capacity=1 << 8, extraction_capacity=1 << 4)
    ref = make_block(n=REF_EVENTS, d=d, seed=999, n_classes=CLASSES)
    eng = DetectionEngine(cfg, {("warm", "1"): dataclasses.replace(
        Profile.build(ref), model_id="warm", model_version="1")})
    blk = make_block(n=WARMUP_EVENTS, d=d, seed=998, n_classes=CLASSES,
                     start_ms=int(ref.ts[-1]) + 10, model_id="warm")
    eng.process(blk)


def measure(
    n_clients: int, cfg: DetectorConfig | None = None, d: int = FEATURES, block: int = BLOCK,
    checkpoints: int = CHECKPOINTS, regulars: int = REGULARS, seed: int = 0,
) -> dict[str, Any]:
    """Feed ``n_clients`` distinct clients through a fresh engine; memory at checkpoints.

    Runs in the calling process (see :func:`run` for the fresh-interpreter wrapper).
    """
    cfg = cfg or DetectorConfig()
    progress(f"memory: warm-up (loading compiled kernels), {d} features")
    _warm_kernels(d)
    ref = make_block(n=REF_EVENTS, d=d, seed=seed * 2 + 1, n_classes=CLASSES)
    profile = Profile.build(ref, cfg.bins, cfg.flood_scales_ms)
    gc.collect()
    peak_reset = reset_peak()
    before = proc_status()["VmRSS"]
    t_build = time.perf_counter()
    eng = DetectionEngine(cfg, {profile.key: profile})
    eng.process(ref.take(slice(-1, None)))  # builds the detectors (calibration included)
    build_s = time.perf_counter() - t_build
    status = proc_status()
    after_build = status["VmRSS"]
    build_peak = status["VmHWM"] if peak_reset else after_build
    peak_reset = peak_reset and reset_peak()  # from here: the stream's own peak
    progress(f"memory: engine built in {build_s:.1f} s, RSS +{(after_build - before) / MB:.1f} MB")
    build_point = {"distinct_clients": 0, "events": 0, "rss_bytes": after_build,
                   "rss_growth_bytes": after_build - before,
                   "state_bytes": engine_state(eng)["total"]}
    flood = next(x for x in eng.models[profile.key].detectors if isinstance(x, FloodDetector))
    extr = next(x for x in eng.models[profile.key].detectors
                if isinstance(x, ExtractionDetector))
    marks = sorted({math.ceil(n_clients * (k + 1) / checkpoints) for k in range(checkpoints)})
    points: list[dict[str, Any]] = []
    events = 0
    proc_s = 0.0
    last_events, last_s = 0, 0.0
    max_rss = after_build
    t0 = time.perf_counter()
    stream = client_stream(n_clients, d, int(ref.ts[-1]) + 10, block, regulars=regulars,
                           seed=seed)
    for blk, distinct in stream:
        t = time.perf_counter()
        eng.process(blk)
        proc_s += time.perf_counter() - t
        events += len(blk)
        if not marks or distinct < marks[0]:
            continue
        while marks and distinct >= marks[0]:
            marks.pop(0)
        rss = proc_status()["VmRSS"]
        max_rss = max(max_rss, rss)
        state = engine_state(eng)
        point = {
            "distinct_clients": distinct,
            "events": events,
            "rss_bytes": rss,
            "rss_growth_bytes": rss - before,
            "state_bytes": state["total"],
            "flood_evictions": flood.evictions,
            "extraction_evictions": extr.evictions,
            "flood_occupancy": float(np.count_nonzero(flood.keys) / flood.keys.size),
            "extraction_occupancy": float(np.count_nonzero(extr.state.keys)
                                          / extr.state.keys.size),
            "key_cache_entries": key_cache_entries(),
            "key_cache_bytes": python_bytes(getattr(client_table, "_key_cache", {})),
            "process_seconds": proc_s,
            "events_per_s": (events - last_events) / max(proc_s - last_s, 1e-9),
        }
        last_events, last_s = events, proc_s
        points.append(point)
        done = len(points) / checkpoints
        bar = "#" * int(20 * done) + "." * (20 - int(20 * done))
        progress(f"memory [{bar}] {distinct:>10,} clients {events:>10,} events  RSS "
                 f"+{point['rss_growth_bytes'] / MB:7.1f} MB  state {state['total'] / MB:6.1f} MB"
                 f"  evictions {point['flood_evictions']:>9,} / {point['extraction_evictions']:>9,}"
                 f"  {fmt_rate(point['events_per_s'])} events/s")
    wall_s = time.perf_counter() - t0
    status = proc_status()
    peak = status["VmHWM"] if peak_reset else max(max_rss, status["VmRSS"])
    state = engine_state(eng)
    regulars = min(regulars, n_clients)
    regular_ids = np.array([f"regular-{j}" for j in range(regulars)], dtype=object)
    reg_keys = client_hashes(profile.model_id, profile.model_version, regular_ids)
    return {
        "build_point": build_point,
        "points": points,
        "events": events,
        "distinct_clients": points[-1]["distinct_clients"] if points else 0,
        "one_shot_clients": n_clients - regulars,
        "regular_clients": regulars,
        "rss_before_engine_bytes": before,
        "rss_after_build_bytes": after_build,
        "build_rss_growth_bytes": after_build - before,
        "build_peak_rss_growth_bytes": build_peak - before,
        "stream_peak_rss_growth_bytes": peak - before,
        "peak_rss_growth_bytes": max(peak, build_peak) - before,
        "peak_source": "VmHWM (reset after warm-up)" if peak_reset else "largest sampled VmRSS",
        "ru_maxrss_lifetime_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "state": state,
        "profile_python_bytes": python_bytes(profile),
        "key_cache_bytes_max": max(p["key_cache_bytes"] for p in points),
        "key_cache_entries_max": max(p["key_cache_entries"] for p in points),
        "flood_evictions": flood.evictions,
        "extraction_evictions": extr.evictions,
        "regulars_tracked": {
            "flood": float(np.isin(reg_keys, flood.keys).mean()) if regulars else None,
            "extraction": float(np.isin(reg_keys, extr.state.keys).mean()) if regulars else None,
        },
        "detections": dict(eng.detections),
        "build_seconds": build_s,
        "process_seconds": proc_s,
        "wall_seconds": wall_s,
        "events_per_s": events / max(proc_s, 1e-9),
    }


# -- run, report -----------------------------------------------------------------------------


def _measure_isolated(n_clients: int, cfg: DetectorConfig, d: int, block: int) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter (progress lines pass through on stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="inferwatch-memory-") as tmp:
        path = Path(tmp) / "measured.json"
        cmd = [sys.executable, "-m", "benchmarks.memory", "--worker", str(path),
               "--clients", str(n_clients), "--features", str(d), "--block", str(block),
               "--client-capacity", str(cfg.client_capacity),
               "--extraction-capacity", str(cfg.extraction_capacity),
               "--window", str(cfg.window)]
        res = subprocess.run(cmd, cwd=ROOT, env=env, timeout=3600, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"memory measurement failed (exit {res.returncode})")
        return json.loads(path.read_text(encoding="utf-8"))


def verdict(measured: dict[str, Any], budget: dict[str, int], cfg: DetectorConfig
            ) -> dict[str, Any]:
    """Within budget, bounded (half-way vs end), and evictions where the tables overflow."""
    pts = measured["points"]
    end = pts[-1]
    half = next(p for p in pts if p["distinct_clients"] >= end["distinct_clients"] / 2)
    distinct = end["distinct_clients"]
    state_end = measured["state"]["total"]
    return {
        "state_budget_bytes": budget["state_total"],
        "budget_bytes": budget["total"],
        "state_bytes": state_end,
        "peak_rss_growth_bytes": measured["peak_rss_growth_bytes"],
        "state_within_budget": state_end <= budget["state_total"],
        "peak_rss_within_budget": measured["peak_rss_growth_bytes"] <= budget["total"],
        "within_budget": (state_end <= budget["state_total"]
                          and measured["peak_rss_growth_bytes"] <= budget["total"]),
        "half_distinct_clients": half["distinct_clients"],
        "end_distinct_clients": distinct,
        "state_bytes_half": half["state_bytes"],
        "state_bytes_end": end["state_bytes"],
        "state_bounded": half["state_bytes"] == end["state_bytes"] == state_end,
        "rss_growth_half_bytes": half["rss_growth_bytes"],
        "rss_growth_end_bytes": end["rss_growth_bytes"],
        "rss_growth_second_half_bytes": end["rss_bytes"] - half["rss_bytes"],
        "flood_evictions_at_least": max(0, distinct - cfg.client_capacity),
        "extraction_evictions_at_least": max(0, distinct - cfg.extraction_capacity),
        "evictions_as_expected": (
            measured["flood_evictions"] >= max(0, distinct - cfg.client_capacity)
            and measured["extraction_evictions"] >= max(0, distinct - cfg.extraction_capacity)),
    }


def run(
    out_dir: str | Path, n_clients: int, quick: bool, cfg: DetectorConfig | None = None,
    d: int = FEATURES, block: int = BLOCK, isolate: bool = True,
) -> dict[str, Any]:
    """Measure, compare with the documented budget; write ``memory.{json,md,png}``."""
    t0 = time.perf_counter()
    cfg = cfg or DetectorConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    measured = (_measure_isolated(n_clients, cfg, d, block) if isolate
                else measure(n_clients, cfg, d, block))
    budget = documented_budget(cfg, d, CLASSES)
    report: dict[str, Any] = {
        "benchmark": "memory",
        "config": {
            "clients": n_clients, "quick": quick, "features": d, "classes": CLASSES,
            "block": block, "new_share": NEW_SHARE, "regulars": measured["regular_clients"],
            "window": cfg.window, "step": cfg.step, "bins": cfg.bins,
            "flood_scales_ms": list(cfg.flood_scales_ms),
            "client_capacity": cfg.client_capacity,
            "extraction_capacity": cfg.extraction_capacity,
            "flood_bytes_per_slot": FloodDetector.bytes_per_client(len(cfg.flood_scales_ms)),
            "extraction_bytes_per_slot": extraction.bytes_per_client(d),
            "isolated_process": isolate,
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "cpus": os.cpu_count(), "platform": sys.platform,
        },
        "budget": budget,
        "measured": measured,
        "verdict": verdict(measured, budget, cfg),
    }
    report["total_seconds"] = round(time.perf_counter() - t0, 2)
    (out / "memory.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / "memory.md").write_text(markdown(report), encoding="utf-8")
    plot(report, out / "memory.png")
    return report


def _mb(x: float) -> str:
    return f"{x / MB:,.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The budget next to the measurement, the checkpoints, and the verdict."""
    c, b, m, v = report["config"], report["budget"], report["measured"], report["verdict"]
    st = m["state"]
    yn = {True: "yes", False: "no"}
    per_model_budget = b["state_total"] - b["flood_client_table"] - b["extraction_client_table"]
    lines = [
        "# Memory: one model, distinct clients through DetectionEngine.process",
        "",
        f"{v['end_distinct_clients']:,} distinct client ids ({m['one_shot_clients']:,} seen "
        f"once, {m['regular_clients']:,} regulars) in {m['events']:,} events of "
        f"{c['features']} features, "
        f"blocks of {c['block']:,}; client table {c['client_capacity']:,} slots x "
        f"{c['flood_bytes_per_slot']} B, extraction table {c['extraction_capacity']:,} slots x "
        f"{c['extraction_bytes_per_slot']:,} B, window {c['window']:,}; "
        f"{'fresh interpreter' if c['isolated_process'] else 'in-process'}.",
        "",
        f"**Within budget: {yn[v['within_budget']]}** (engine state {_mb(v['state_bytes'])} MB "
        f"against {_mb(v['state_budget_bytes'])} MB documented; peak RSS growth "
        f"{_mb(v['peak_rss_growth_bytes'])} MB against {_mb(v['budget_bytes'])} MB with the "
        f"key cache and working set). **Bounded: {yn[v['state_bounded']]}** (state "
        f"{_mb(v['state_bytes_half'])} MB at {v['half_distinct_clients']:,} clients and "
        f"{_mb(v['state_bytes_end'])} MB at {v['end_distinct_clients']:,}; RSS "
        f"{v['rss_growth_second_half_bytes'] / MB:+,.2f} MB over the second half). "
        f"Evictions: {m['flood_evictions']:,} (client table, at least "
        f"{v['flood_evictions_at_least']:,} expected), {m['extraction_evictions']:,} "
        f"(extraction, at least {v['extraction_evictions_at_least']:,}); regular clients still "
        f"tracked at the end: {_share(m['regulars_tracked']['flood'])} (client table), "
        f"{_share(m['regulars_tracked']['extraction'])} (extraction). "
        f"{fmt_rate(m['events_per_s'])} events/s inside the engine.",
        "",
        "| component | documented budget (MB) | measured numpy state (MB) |",
        "|---|---:|---:|",
        f"| per-client rate table (flood) | {_mb(b['flood_client_table'])} "
        f"| {_mb(st['flood_client_table'])} |",
        f"| per-client extraction table | {_mb(b['extraction_client_table'])} "
        f"| {_mb(st['extraction_client_table'])} |",
        f"| per model: windows {_mb(b['windows'])}, whitened shift "
        f"{_mb(b['whitened_shift'])}, sybil / population {_mb(b['sybil_population'])}, "
        f"extraction calibration {_mb(b['extraction_calibration'])}, baseline tables "
        f"{_mb(b['baseline_tables'])} | {_mb(per_model_budget)} | {_mb(st['per_model_rest'])} |",
        f"| **detector state** | **{_mb(b['state_total'])}** | **{_mb(st['total'])}** |",
        f"| client-key cache (process-wide; measured: its largest size) "
        f"| {_mb(b['client_key_cache'])} | {_mb(m['key_cache_bytes_max'])} |",
        f"| working set: engine build, one block of {c['block']:,} events (in the RSS below) "
        f"| {_mb(b['working_set'])} | |",
        f"| **process RSS growth** | **{_mb(b['total'])}** "
        f"| **{_mb(m['peak_rss_growth_bytes'])}** (peak) |",
        "",
        "Per detector (numpy state, MB): "
        + ", ".join(f"{k} {_mb(val)}" for k, val in st["per_detector"].items())
        + f". Not in the RSS growth: the baseline profile itself (Python lists, loaded before "
        f"the engine: {_mb(m['profile_python_bytes'])} MB, documented "
        f"{_mb(b['baseline_profile'])} MB). Process RSS: building the engine "
        f"{_mb(m['build_rss_growth_bytes'])} MB (peak {_mb(m['build_peak_rss_growth_bytes'])} MB "
        f"during calibration), peak over the stream {_mb(m['stream_peak_rss_growth_bytes'])} MB "
        f"({m['peak_source']}), both above the RSS before the engine was built.",
        "",
        "| distinct clients | events | RSS growth (MB) | state (MB) | key cache (MB) "
        "| evictions (client table) | evictions (extraction) | client table filled | events/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in m["points"]:
        lines.append(
            f"| {p['distinct_clients']:,} | {p['events']:,} | {_mb(p['rss_growth_bytes'])} "
            f"| {_mb(p['state_bytes'])} | {_mb(p['key_cache_bytes'])} | {p['flood_evictions']:,} "
            f"| {p['extraction_evictions']:,} | {100 * p['flood_occupancy']:.1f} % "
            f"| {p['events_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def plot(report: dict[str, Any], path: Path) -> None:
    """RSS growth and state bytes against distinct clients seen, with the budget; evictions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, m, v = report["config"], report["measured"], report["verdict"]
    pts = m["points"]
    xs = [p["distinct_clients"] for p in pts]
    mem = [m["build_point"], *pts]  # from the engine's construction on
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot([p["distinct_clients"] for p in mem], [p["rss_growth_bytes"] / MB for p in mem],
            "o-", color="#1f77b4", label="process RSS growth")
    ax.plot([p["distinct_clients"] for p in mem], [p["state_bytes"] / MB for p in mem],
            "s--", color="#2ca02c", label="engine numpy state")
    ax.axhline(v["budget_bytes"] / MB, color="#d62728", ls=":",
               label="documented budget (state + key cache + working set)")
    ax.axhline(v["state_budget_bytes"] / MB, color="#2ca02c", ls=":", lw=0.8,
               label="documented state budget")
    ax.axhline(v["peak_rss_growth_bytes"] / MB, color="#1f77b4", ls=":", lw=0.8,
               label="peak RSS growth")
    for a in (ax, ax2):
        if c["client_capacity"] < xs[-1]:
            a.axvline(c["client_capacity"], color="gray", ls="--", lw=0.8,
                      label="client table capacity")
    ax.set_xlabel("distinct clients seen")
    ax.set_ylabel("MB")
    ax.set_ylim(0, max(v["budget_bytes"], v["peak_rss_growth_bytes"]) / MB * 1.2)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("memory vs distinct clients")
    ax2.plot(xs, [p["flood_evictions"] for p in pts], "o-", color="#ff7f0e",
             label=f"client table ({c['client_capacity']:,} slots)")
    ax2.plot(xs, [p["extraction_evictions"] for p in pts], "s--", color="#9467bd",
             label=f"extraction table ({c['extraction_capacity']:,} slots)")
    ax2.set_xlabel("distinct clients seen")
    ax2.set_ylabel("evictions (least recently seen)")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="upper left", fontsize=8)
    ax2.set_title("evictions")
    for a in (ax, ax2):
        a.ticklabel_format(style="plain", axis="both")
        a.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax2.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    fig.suptitle(f"DetectionEngine, {c['features']} features, "
                 f"{v['end_distinct_clients']:,} distinct clients")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _power_of_two(text: str) -> int:
    n = int(text)
    if n < 1 or n & (n - 1):
        raise argparse.ArgumentTypeError(f"{n} is not a power of two")
    return n


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.memory``: memory against the documented budget."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.memory",
        description="Feed the detection core a stream with N distinct client ids; measure "
        "process RSS, the engine's numpy state and table evictions against the documented "
        "memory budget; writes memory.json, memory.md and memory.png.",
        epilog="example: python -m benchmarks.memory --quick --out bench-out",
    )
    defaults = DetectorConfig()
    ap.add_argument("--quick", action="store_true",
                    help=f"CI-sized run ({QUICK_CLIENTS:,} distinct clients instead of "
                    f"{FULL_CLIENTS:,})")
    ap.add_argument("--out", default="bench-out", help="output directory (default bench-out/)")
    ap.add_argument("--clients", type=int, default=None, help="distinct client ids")
    ap.add_argument("--features", type=int, default=FEATURES,
                    help=f"features per event (default {FEATURES})")
    ap.add_argument("--block", type=int, default=BLOCK,
                    help=f"events per block (default {BLOCK:,})")
    ap.add_argument("--client-capacity", type=_power_of_two, default=defaults.client_capacity,
                    help=f"client table slots (default {defaults.client_capacity:,})")
    ap.add_argument("--extraction-capacity", type=_power_of_two,
                    default=defaults.extraction_capacity,
                    help=f"extraction table slots (default {defaults.extraction_capacity:,})")
    ap.add_argument("--window", type=int, default=defaults.window,
                    help=f"drift / confidence window (default {defaults.window:,})")
    ap.add_argument("--in-process", action="store_true",
                    help="measure in this interpreter instead of a fresh one")
    ap.add_argument("--worker", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n = args.clients or (QUICK_CLIENTS if args.quick else FULL_CLIENTS)
    if n < 2 or args.features < 1 or args.block < 2:
        ap.error("--clients and --block must be at least 2, --features at least 1")
    cfg = dataclasses.replace(defaults, client_capacity=args.client_capacity,
                              extraction_capacity=args.extraction_capacity, window=args.window)
    if args.worker:  # the fresh interpreter of run(): measure only
        measured = measure(n, cfg, args.features, args.block)
        Path(args.worker).write_text(json.dumps(measured), encoding="utf-8")
        return 0
    report = run(args.out, n, args.quick, cfg, args.features, args.block,
                 isolate=not args.in_process)
    print(markdown(report))
    out = Path(args.out)
    progress(f"wrote {out / 'memory.json'}, {out / 'memory.md'}, {out / 'memory.png'} in "
             f"{report['total_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
