"""The ``inferwatch`` command line: run, demo, replay, baseline build, schemas."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from streams.settings import Settings, settings_help


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _cmd_run(args: argparse.Namespace) -> int:
    from detectors.baseline import load_profiles
    from streams.app import run_worker
    from streams.broker import EmbeddedBroker
    from streams.topics import check_copartitioned, ensure_topics, partition_counts

    settings = Settings()
    if args.baselines:
        settings.baselines = Path(args.baselines)
    profiles = load_profiles(settings.baselines)
    broker = None
    if not settings.broker:
        broker = EmbeddedBroker().start()
        settings.broker = broker.url
        print(f"inferwatch: embedded broker on {broker.bootstrap} (memory only)", file=sys.stderr)
    try:
        ensure_topics(settings.bootstrap(), settings.all_topics(), settings.topic_partitions,
                      **settings.kafka_client_config())
        try:
            settings.topic_partitions = check_copartitioned(partition_counts(
                settings.bootstrap(), settings.sharded_topics(), **settings.kafka_client_config()))
        except ValueError as exc:
            print(f"inferwatch: {exc}", file=sys.stderr)
            return 2
        print(f"inferwatch: worker consuming {settings.topic_events}, {settings.topic_batches} "
              f"on {settings.broker}; {len(profiles)} baseline profile(s) loaded", file=sys.stderr)
        run_worker(settings, profiles)
    finally:
        if broker:
            broker.stop()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(seconds=args.seconds, rate=args.rate, quiet=args.quiet)


def _cmd_demo_traffic(args: argparse.Namespace) -> int:
    import numpy as np

    from detectors.baseline import save_profiles
    from streams.demo import generate_traffic, reference_profile
    from streams.producer import InferenceProducer

    rng = np.random.default_rng(args.seed)
    seq = [0]
    if args.baseline_out:
        save_profiles([reference_profile(rng, args.rate, seq)], args.baseline_out)
    with InferenceProducer(args.broker) as producer:
        sent = generate_traffic(producer, args.seconds, args.rate, rng, seq,
                                attacks=not args.benign)
    print(f"sent {sent:,} events to {args.broker}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from streams.chain import read_chain, verify_records

    settings = Settings()
    bootstrap = args.broker or (settings.bootstrap() if settings.broker else None)
    if not bootstrap:
        print("inferwatch verify: give --broker HOST:PORT or set INFERWATCH_BROKER",
              file=sys.stderr)
        return 2
    topic = args.topic or settings.topic_incidents
    records = read_chain(bootstrap, topic, **settings.kafka_client_config())
    problems = verify_records(records)
    parts = sorted({p for p, _, _ in records})
    print(f"read {len(records)} record(s) of {topic} on {len(parts)} partition(s)")
    if not problems:
        print("hash chain intact")
        return 0
    first = problems[0]
    print(f"hash chain BROKEN: first problem at partition {first['partition']} offset "
          f"{first['offset']}: {first['problem']}")
    for p in problems[1:10]:
        print(f"  also partition {p['partition']} offset {p['offset']}: {p['problem']}")
    return 1


BENCHES = ("quality", "kernels", "sweeps", "scaleout", "e2e", "memory")


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib
    import time

    which = BENCHES if args.which == "all" else (args.which,)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rc = 0
    runs = []
    t_all = time.monotonic()
    for i, name in enumerate(which, 1):
        print(f"== inferwatch bench {name} ({i}/{len(which)}) -> {out}", file=sys.stderr,
              flush=True)
        before = {p.name: p.stat().st_mtime for p in out.iterdir() if p.is_file()}
        t = time.monotonic()
        module = importlib.import_module(f"benchmarks.{name}")
        argv = ["--out", str(out)] + (["--quick"] if args.quick else [])
        code = int(module.main(argv) or 0)
        took = time.monotonic() - t
        files = sorted(p.name for p in out.iterdir()
                       if p.is_file() and before.get(p.name) != p.stat().st_mtime)
        runs.append({"bench": name, "seconds": round(took, 1), "exit_code": code,
                     "files": files})
        print(f"== inferwatch bench {name}: {'ok' if code == 0 else f'exit {code}'} in "
              f"{took:.0f} s; wrote {', '.join(files) or 'nothing'}", file=sys.stderr,
              flush=True)
        rc = max(rc, code)
    total = time.monotonic() - t_all
    summary = {"quick": bool(args.quick), "seconds": round(total, 1), "runs": runs}
    (out / "bench.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"== inferwatch bench: {len(runs)} benchmark(s) in {total:.0f} s; summary in "
          f"{out / 'bench.json'}", file=sys.stderr, flush=True)
    return rc


def _print_summary(report, out: Path | None) -> None:  # type: ignore[no-untyped-def]
    opened = report.by_detector()
    statuses = Counter(r["status"] for r in report.incidents)
    print(f"replayed {report.events:,} events in {report.seconds:.1f} s; "
          f"{report.rejected:,} rejected; {len(report.incidents)} incident records "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items())) or 'none'})")
    for r in report.reject_samples[:5]:
        print(f"  rejected line {r.index}: {r.reason}")
    for det, n in sorted(opened.items()):
        print(f"  {det}: {n} incident(s)")
    for r in report.incidents:
        if r["status"] == "open":
            print(f"  [{r['severity']}] {r['summary']}")
    if out:
        print(f"incident records written to {out}")


def _cmd_replay(args: argparse.Namespace) -> int:
    from detectors.baseline import load_profiles
    from streams.replay import replay, write_incidents

    settings = Settings()
    base = args.baselines or settings.baselines
    profiles = load_profiles(base)
    report = replay(args.events, profiles, settings.detector_config(),
                    progress=None if args.quiet else sys.stderr)
    if args.out:
        write_incidents(report.incidents, args.out)
    _print_summary(report, Path(args.out) if args.out else None)
    return 0


def _cmd_baseline_build(args: argparse.Namespace) -> int:
    from streams.replay import build_baselines

    profiles, report = build_baselines(args.reference, args.out, bins=args.bins)
    print(f"read {report.events:,} reference events ({report.rejected:,} rejected)")
    for r in report.reject_samples[:5]:
        print(f"  rejected line {r.index}: {r.reason}")
    for p in profiles:
        print(f"  {p.model_id}@{p.model_version}: {p.n_ref:,} events, {p.n_features} features, "
              f"{p.n_classes} classes, {p.n_clients} clients -> {Path(args.out) / p.filename()}")
    if not profiles:
        print("no valid events: no profile written", file=sys.stderr)
        return 1
    return 0


def _cmd_schemas(args: argparse.Namespace) -> int:
    from schemas.registry import SCHEMA_IDS, schema_json

    for name, sid in SCHEMA_IDS.items():
        if args.name and args.name != name:
            continue
        print(f"# schema id {sid}: {name}")
        print(json.dumps(schema_json(name), indent=2 if args.name else None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inferwatch",
        formatter_class=_formatter,
        description="Streaming detection of drift, confidence shift, query floods and model "
        "extraction on ML inference traffic in Kafka.",
        epilog="Start here:  inferwatch demo --seconds 60",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", formatter_class=_formatter, help="run the detection worker (Faust)",
        description="Run the Faust worker: consume inference events, publish incidents.\n"
        "Without INFERWATCH_BROKER it starts the embedded broker on a free loopback port.",
        epilog="example:\n  INFERWATCH_BROKER=kafka://127.0.0.1:9092 inferwatch run "
        "--baselines ./baselines\n\nsettings (environment variables):\n" + settings_help(),
    )
    run.add_argument("--baselines", metavar="DIR", help="baseline profiles (overrides "
                     "INFERWATCH_BASELINES)")
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser(
        "demo", formatter_class=_formatter, help="embedded broker + worker + attack traffic",
        description="Start the embedded broker and a worker, send benign traffic with an "
        "injected query flood, confidence drop and input drift, print incidents live and a "
        "summary at the end.",
        epilog="example:\n  inferwatch demo --seconds 60",
    )
    demo.add_argument("--seconds", type=float, default=60.0, help="traffic duration (default 60)")
    demo.add_argument("--rate", type=float, default=400.0, help="benign events/s (default 400)")
    demo.add_argument("--quiet", action="store_true", help="summary only")
    demo.set_defaults(func=_cmd_demo)

    tr = sub.add_parser(
        "demo-traffic", formatter_class=_formatter, help="send demo traffic to a broker",
        description="Publish the demo's traffic (benign clients plus a flood, a confidence "
        "drop and drift) to an existing broker, e.g. the docker-compose Kafka.",
        epilog="example:\n  inferwatch demo-traffic --broker 127.0.0.1:9092 --seconds 120",
    )
    tr.add_argument("--broker", default="127.0.0.1:9092", help="bootstrap host:port")
    tr.add_argument("--seconds", type=float, default=3600.0, help="duration (default 3600)")
    tr.add_argument("--rate", type=float, default=400.0, help="benign events/s (default 400)")
    tr.add_argument("--seed", type=int, default=7, help="random seed")
    tr.add_argument("--benign", action="store_true", help="no injected incidents")
    tr.add_argument("--baseline-out", metavar="DIR",
                    help="also write the matching golden baseline profile here")
    tr.set_defaults(func=_cmd_demo_traffic)

    rp = sub.add_parser(
        "replay", formatter_class=_formatter, help="run the detectors over a JSONL event log",
        description="Replay logged events (one JSON event per line) through the same detectors "
        "as the worker, on event time, without a broker.",
        epilog="example:\n  inferwatch replay events.jsonl --baselines ./baselines "
        "--out incidents.jsonl",
    )
    rp.add_argument("events", metavar="EVENTS.jsonl")
    rp.add_argument("--baselines", metavar="DIR", help="baseline profiles directory")
    rp.add_argument("--out", metavar="INCIDENTS.jsonl", help="write incident records here")
    rp.add_argument("--quiet", action="store_true", help="no progress lines")
    rp.set_defaults(func=_cmd_replay)

    bl = sub.add_parser("baseline", help="golden baselines").add_subparsers(
        dest="baseline_command", required=True, metavar="SUBCOMMAND")
    bb = bl.add_parser(
        "build", formatter_class=_formatter, help="profile reference events per model version",
        description="Build one golden baseline profile per (model_id, model_version) found in "
        "a JSONL file of reference events.",
        epilog="example:\n  inferwatch baseline build reference.jsonl --out ./baselines",
    )
    bb.add_argument("reference", metavar="REFERENCE.jsonl")
    bb.add_argument("--out", metavar="DIR", required=True, help="directory for the profiles")
    bb.add_argument("--bins", type=int, default=16, help="quantile bins per feature (16)")
    bb.set_defaults(func=_cmd_baseline_build)

    bn = sub.add_parser(
        "bench", formatter_class=_formatter,
        help="benchmarks: detection quality, throughput, memory",
        description="Run inferwatch's benchmarks and write JSON, a markdown table and plots "
        "to --out: quality (labelled scenarios vs river), kernels (detector kernels vs river "
        "and numpy), sweeps (batch size, window, features), scaleout (partitions x workers "
        "through the embedded broker), e2e (through the embedded broker, "
        "vs a naive Faust agent), memory (1,000,000 distinct clients against the documented "
        "memory budget).",
        epilog="example:\n  inferwatch bench --quick\n  inferwatch bench quality "
        "--out bench-out\n  inferwatch bench memory --out bench-out",
    )
    bn.add_argument("which", nargs="?", default="all", choices=("all", *BENCHES))
    bn.add_argument("--quick", action="store_true", help="reduced sizes (CI)")
    bn.add_argument("--out", default="bench-out", help="output directory (bench-out)")
    bn.set_defaults(func=_cmd_bench)

    vf = sub.add_parser(
        "verify", formatter_class=_formatter, help="check the incident topic's hash chain",
        description="Read every record of the incident topic and check each partition's hash "
        "chain; report the first missing, reordered or altered record. Exit 1 if broken.",
        epilog="example:\n  inferwatch verify --broker 127.0.0.1:9092 --topic ml-incidents",
    )
    vf.add_argument("--broker", help="bootstrap host:port (default: INFERWATCH_BROKER)")
    vf.add_argument("--topic", help="topic to check (default: INFERWATCH_TOPIC_INCIDENTS)")
    vf.set_defaults(func=_cmd_verify)

    sc = sub.add_parser(
        "schemas", formatter_class=_formatter, help="print the Avro schemas and their ids",
        description="Print the schemas inferwatch accepts and publishes, with the fixed ids "
        "producers put in the Confluent wire-format header.",
        epilog="example:\n  inferwatch schemas inference_event",
    )
    sc.add_argument("name", nargs="?", help="one schema (inference_event, inference_batch, "
                    "incident)")
    sc.set_defaults(func=_cmd_schemas)
    return p


def _one_blas_thread() -> None:
    """Run numpy's BLAS on one thread in inferwatch's own processes.

    Its products are small (a block times a 32 x 32 whitening matrix); with one BLAS
    thread per core, OpenBLAS's idle threads spin on the cores the broker and producers
    need (measured: the worker took 1.8 cores instead of 0.9 for the same events/s).
    """
    import numpy  # noqa: F401 - loads the BLAS library, which the limit applies to
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


#: Longest a thread holds the GIL while another waits for it (Python's default is 5 ms).
GIL_SWITCH_S = 0.0005


def _short_gil_turns() -> None:
    """Hand the GIL over every 0.5 ms instead of every 5 ms.

    A worker has three busy threads: the event loop (fetching, decoding record batches),
    the step thread and the detector helper. The kernels release the GIL, but each return
    to Python waits for it; with 5 ms turns the kernels' threads sat idle behind the
    event loop (measured: batch messages end to end 688 k -> 742 k events/s).
    """
    sys.setswitchinterval(GIL_SWITCH_S)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _one_blas_thread()
    _short_gil_turns()
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        print(f"inferwatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
