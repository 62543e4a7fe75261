"""A second thread for a model's detectors, so one worker uses two cores.

The detector kernels are numba functions compiled with ``nogil=True``: while one runs,
other Python threads go on. A model's detectors share nothing but their (read-only) block,
so :class:`~detectors.engine.ModelDetectors` hands the extraction detector to this thread
and runs the others meanwhile; their detections are joined in the same order as on one
thread, so the incident records are the same either way.

One helper thread serves the whole process: steps run one at a time per worker, and a
second caller only queues behind the first (never deadlocks: helper jobs submit nothing).

>>> result, seconds = submit(sum, [1, 2, 3]).result()
>>> result, seconds >= 0
(6, True)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="inferwatch-detectors")
        return _pool


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


def submit(fn: Callable[..., T], *args: Any) -> Future[tuple[T, float]]:
    """Run ``fn(*args)`` on the helper thread; the future gives ``(result, seconds)``."""
    return _executor().submit(_timed, fn, *args)
