"""Partitions and workers: how throughput scales when shards are spread over workers.

Why: inferwatch shards detector state by model (one shard per partition of the input
topics, see :mod:`streams.sharding`), so the partition count bounds how many workers can
share the work. Operators need to know what a second worker buys on their hardware.

For each configuration (partitions, workers) this starts an embedded broker's worth of
fresh topics, starts the workers and waits until every shard is held, then publishes the
same batch-message stream (``models`` models spread over the shards, keyed by model as
``InferenceProducer`` does) and measures the aggregate rate from the first to the last
event counted by the workers' ``inferwatch_events_in_total``. On a 2-core machine two
workers compete for the same cores as the broker and the producer, so read the ratio
against the machine's core count.

``python -m benchmarks.scaleout [--quick] [--out DIR]`` writes ``scaleout.json``,
``scaleout.md`` and ``scaleout.png``.

>>> spread(["m-0", "m-1", "m-2", "m-3"], 1)
{0: 4}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.e2e import scrape, start_process, stop_process, topic_set, worker_env
from benchmarks.synthetic import make_block
from detectors.baseline import Profile, save_profiles
from streams.broker import EmbeddedBroker, free_port
from streams.producer import InferenceProducer
from streams.sharding import shard_of
from streams.topics import ensure_topics

#: (partitions, workers): the single-shard baseline, the same worker with shards, two
#: workers sharing them.
CONFIGS = {"quick": [(1, 1), (2, 1), (2, 2)], "full": [(1, 1), (4, 1), (4, 2)]}
SIZES = {"quick": dict(events=40_000, models=8, batch=5_000),
         "full": dict(events=1_200_000, models=8, batch=5_000)}


def spread(models: list[str], partitions: int) -> dict[int, int]:
    """How many of ``models`` each shard holds."""
    return dict(Counter(shard_of(m, partitions) for m in models))


def _total(ports: list[int], name: str) -> float:
    total = 0.0
    for p in ports:
        m = scrape(p) or {}
        total += m.get(name, 0.0)
    return total


def run_config(broker: EmbeddedBroker, partitions: int, workers: int, size: dict[str, int],
               work: Path, say: Any) -> dict[str, Any]:
    """Throughput of ``workers`` workers on ``partitions`` shards."""
    tag = f"so{partitions}x{workers}-{int(time.time())}"
    topics = topic_set(tag)
    models = [f"scale-model-{i}" for i in range(size["models"])]
    base = work / f"{tag}-baselines"
    base.mkdir(parents=True)
    blocks = {m: make_block(n=5000, seed=i, model_id=m, d=32, start_ms=1_767_000_000_000)
              for i, m in enumerate(models)}
    save_profiles([Profile.build(b) for b in blocks.values()], base)
    env_topics = {**topics, "repartition": f"{tag}-repartition",
                  "checkpoints": f"{tag}-checkpoints"}
    ensure_topics(broker.bootstrap, list(env_topics.values()), partitions=partitions)
    ports = [free_port() for _ in range(workers)]
    procs = [start_process(
        [sys.executable, "-m", "streams.cli", "run"],
        worker_env(broker.url, env_topics, f"{tag}-app", base, port,
                   INFERWATCH_TOPIC_PARTITIONS=str(partitions)),
        work / f"{tag}-worker{i}.log") for i, port in enumerate(ports)]
    try:
        deadline = time.monotonic() + 120
        while _total(ports, "inferwatch_shards_held") < partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workers} worker(s) did not take {partitions} shards")
            time.sleep(0.5)
        time.sleep(2.0)  # let the group settle after the last join
        say(f"{partitions} partition(s), {workers} worker(s): shards held; publishing "
            f"{size['events']:,} events")
        per_model = size["events"] // len(models)
        total = per_model * len(models)
        marks: dict[str, float] = {}

        def watch() -> None:  # counts while the producer is still publishing
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                seen = _total(ports, "inferwatch_events_in_total")
                now = time.monotonic()
                if "first" not in marks and seen > 0:
                    marks["first"] = now
                if seen >= total:
                    marks["last"] = now
                    return
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        rng = np.random.default_rng(1)
        with InferenceProducer(broker.bootstrap, topic_events=topics["events"],
                               topic_batches=topics["batches"]) as producer:
            for start in range(0, per_model, size["batch"]):
                for m in models:
                    n = min(size["batch"], per_model - start)
                    X = rng.normal(0, 1, (n, 32)).astype(np.float32)
                    S = rng.dirichlet(np.ones(3), n).astype(np.float32)
                    producer.send_batch(
                        m, "1", [f"{m}-{start + i}" for i in range(n)],
                        1_767_000_600_000 + (start + np.arange(n)) * 2,
                        [f"c-{c}" for c in rng.integers(0, 2000, n)],
                        [str(int(k)) for k in S.argmax(1)], X, S)
        watcher.join()
        if "first" not in marks or "last" not in marks:
            raise TimeoutError(f"workers did not process {total:,} events in time")
        first, last = marks["first"], marks["last"]
        rate = total / max(last - first, 1e-9)
        say(f"  {rate:,.0f} events/s")
        return {"partitions": partitions, "workers": workers, "events": total,
                "seconds": round(last - first, 3), "events_per_s": round(rate),
                "models_per_shard": spread(models, partitions)}
    finally:
        for p in procs:
            stop_process(p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI size")
    ap.add_argument("--out", default="bench-out", help="output directory")
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    size = SIZES[mode]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    say = lambda msg: print(f"scaleout: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    results = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        for partitions, workers in CONFIGS[mode]:
            results.append(run_config(broker, partitions, workers, size, Path(tmp), say))
    base = results[0]["events_per_s"]
    for r in results:
        r["vs_1x1"] = round(r["events_per_s"] / base, 2)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    report = {"size": size, "machine": machine,
              "results": results}
    (out / "scaleout.json").write_text(json.dumps(report, indent=2))
    lines = ["| partitions | workers | events/s | vs 1x1 | models per shard |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['partitions']} | {r['workers']} | {r['events_per_s']:,} | {r['vs_1x1']} | "
              f"{r['models_per_shard']} |" for r in results]
    (out / "scaleout.md").write_text(
        f"Batch messages, {size['events']:,} events of {size['models']} models, 32 features, "
        f"all detectors, {os.cpu_count()} CPUs shared by broker, producer and workers.\n\n"
        + "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar([f"{r['partitions']}p x {r['workers']}w" for r in results],
               [r["events_per_s"] for r in results])
        ax.set_ylabel("events/s")
        ax.set_title("throughput by partitions x workers")
        fig.tight_layout()
        fig.savefig(out / "scaleout.png", dpi=100)
        plt.close(fig)
    except ImportError:
        say("matplotlib missing: no plot")
    print((out / "scaleout.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
