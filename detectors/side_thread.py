"""A second thread for a model's detectors, so one worker uses two cores.

The detector kernels are numba functions compiled with ``nogil=True``: while one runs,
other Python threads go on. A model's detectors share nothing but their (read-only) block,
so :class:`~detectors.engine.ModelDetectors` hands the extraction detector to this thread
and runs the others meanwhile; their detections are joined in the same order as on one
thread, so the incident records are the same either way.

One helper thread serves the whole process: steps run one at a time per worker, and a
second caller only queues behind the first (never deadlocks: helper jobs submit nothing).

>>> submit(sum, [1, 2, 3]).result()
6
"""

from __future__ import annotations

import threading
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


def submit(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Run ``fn(*args)`` on the helper thread."""
    return _executor().submit(fn, *args)
