"""The ingest loop's step thread: a cancelled worker never leaves a step running.

Steps run on a thread of their own (the event loop keeps fetching meanwhile). If the
ingest task is cancelled while a step runs, the cancellation must wait for the step:
the final checkpoint reads the pipeline's state, and a thread still changing it would
make that checkpoint inconsistent.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from streams.bulk import ShardedIngest


class _SlowPipeline:
    def __init__(self) -> None:
        self.finished = threading.Event()

    def safe_step(self, msgs: list, decoded: list | None = None) -> str:
        time.sleep(0.3)
        self.finished.set()
        return f"{len(msgs)} messages"


def _ingest(pipeline: _SlowPipeline) -> ShardedIngest:
    ingest = ShardedIngest.__new__(ShardedIngest)  # the step needs no broker connection
    ingest.pipeline = pipeline  # type: ignore[assignment]
    ingest.step_thread = ThreadPoolExecutor(max_workers=1)
    return ingest


def test_a_step_runs_on_the_step_thread_and_returns_its_output() -> None:
    pipeline = _SlowPipeline()
    out = asyncio.run(_ingest(pipeline)._step([1, 2, 3]))
    assert out == "3 messages" and pipeline.finished.is_set()


def test_cancelling_waits_for_the_running_step() -> None:
    pipeline = _SlowPipeline()

    async def scenario() -> None:
        task = asyncio.create_task(_ingest(pipeline)._step([1]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pipeline.finished.is_set()  # done before the cancellation went on

    asyncio.run(scenario())
