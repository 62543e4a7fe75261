"""The detectors give the same incident records on one thread and on two.

With ``detector_threads=2`` the extraction detector runs on a helper thread beside the
others (:mod:`detectors.side_thread`); nothing they share may change the result.
"""

from __future__ import annotations

import numpy as np

from benchmarks.synthetic import make_block
from detectors.baseline import Profile
from detectors.block import EventBlock
from detectors.config import DetectorConfig
from detectors.engine import DetectionEngine


def _stream() -> list[EventBlock]:
    """Benign traffic, then a flooding client and a drift, cut into uneven blocks."""
    start = 1_767_225_700_000
    blocks = [make_block(n=6000, seed=s, start_ms=start + 60_000 * s, n_clients=40,
                         id_prefix=f"s{s}-") for s in range(4)]
    late = blocks[2]
    late.client_id[np.arange(0, len(late), 3)] = "flooder"
    blocks[3].X[:, [1, 4]] += np.float32(1.2)
    whole = EventBlock.concat(blocks)
    cuts = [0, 100, 4_000, 9_000, 9_300, 17_000, len(whole)]
    return [whole.take(slice(a, b)) for a, b in zip(cuts, cuts[1:], strict=False)]


def _records(threads: int) -> tuple[list[dict], dict]:
    ref = make_block(n=8000, seed=99, n_clients=40, id_prefix="ref")
    prof = Profile.build(ref)
    eng = DetectionEngine(DetectorConfig(detector_threads=threads), {prof.key: prof})
    recs = [r for b in _stream() for r in eng.process(b)] + eng.finish()
    for r in recs:
        r.pop("_forensics", None)
    return recs, dict(eng.detections)


def test_two_threads_give_the_same_records_as_one() -> None:
    one, dets_one = _records(1)
    two, dets_two = _records(2)
    assert {r["detector"] for r in one} >= {"drift", "query_flood"}
    assert dets_one == dets_two
    assert one == two


def test_the_worker_setting_reaches_the_engine(monkeypatch) -> None:  # noqa: ANN001
    from streams.settings import Settings

    assert Settings().detector_config().detector_threads == 2
    monkeypatch.setenv("INFERWATCH_DETECTOR_THREADS", "1")
    assert Settings().detector_config().detector_threads == 1


def test_an_error_on_the_helper_thread_reaches_the_caller() -> None:
    from detectors import side_thread

    def boom() -> None:
        raise RuntimeError("kernel failed")

    fut = side_thread.submit(boom)
    try:
        fut.result()
    except RuntimeError as exc:
        assert "kernel failed" in str(exc)
    else:  # pragma: no cover - the assertion is the test
        raise AssertionError("the helper's error was swallowed")
