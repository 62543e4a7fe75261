"""inferwatch's own processes run numpy's BLAS on one thread.

Its products are small; with more threads OpenBLAS's idle threads spun on the second core
and the worker used 1.8 cores for the events/s of 0.9. The limit must hold even when
nothing imported numpy before the command line starts (the case that once slipped).
"""

from __future__ import annotations

import subprocess
import sys


def test_the_command_line_limits_blas_to_one_thread() -> None:
    code = ("import streams.cli as c, sys; assert 'numpy' not in sys.modules; "
            "c._one_blas_thread(); from threadpoolctl import threadpool_info; "
            "print([i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"OPENBLAS_NUM_THREADS": "2", "PATH": ""})
    assert out.stdout.strip() == "[1]"


def test_the_command_line_shortens_the_gil_switch_interval() -> None:
    """Three busy threads in a worker: the kernels' threads must not wait 5 ms for the GIL."""
    code = ("import streams.cli as c, sys; c._short_gil_turns(); "
            "print(sys.getswitchinterval() == c.GIL_SWITCH_S < 0.005)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "True"
