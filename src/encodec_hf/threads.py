"""Torch CPU thread counts for the package's many-small-ops loops, set for the loop and restored after it.

Frame-by-frame streaming (20 ms blocks), the `.ecdc` LM (one 200-wide transformer step per frame), the server's
workers and the per-clip encoding of `encode-dataset` run thousands of small kernels. With several intra-op
threads each kernel ends on an OpenMP barrier, and on a machine whose cores are shared with other processes one
descheduled thread stalls every barrier: streaming 3 s of audio in 20 ms blocks took 3.1-56.8 s with torch's 2
threads on a shared 2-core machine against a steady 3.4-3.6 s with one (`benchmarks/bench_threads.py` measures it).
So these loops run with **one thread by default**, inside :func:`torch_threads`, which sets the count on entry and
restores the caller's on exit (exceptions included): a library call never changes the thread count of the
user's process beyond its own loop.

Which count a loop uses (:func:`resolve_num_threads`), first match wins:

1. the ``num_threads=`` argument of the API (``StreamingEncoder(model, num_threads=4)``, ``lm.num_threads = 4``,
   ``EndpointHandler(..., num_threads=2)``, ``encode-dataset --num-threads``, ``serve --threads``);
2. the environment variable ``ENCODEC_HF_NUM_THREADS`` (a positive integer, or ``inherit``);
3. the user's own setting, left as it is: ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` in the environment, or a
   ``torch.set_num_threads(n)`` call (detected as a count other than torch's start-up default, the number of
   physical cores), and ``inherit`` in 2;
4. the loop's default: 1 (`SMALL_OP_THREADS`).

Torch's thread count is per OS thread (OpenMP's ``nthreads-var``): a scope in one thread (a server worker) does
not change the count another thread sees.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import torch

from .errors import ThreadCountError

ENV_VAR = "ENCODEC_HF_NUM_THREADS"
INHERIT = "inherit"
SMALL_OP_THREADS = 1  # the default of the many-small-ops loops (module docstring)
USER_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

__all__ = ["ENV_VAR", "SMALL_OP_THREADS", "resolve_num_threads", "torch_default_threads", "torch_threads"]


@functools.lru_cache(maxsize=1)
def torch_default_threads() -> int:
    """The count torch starts with when no variable sets it: the physical cores (cpuinfo's cores count), read
    from ``/proc/cpuinfo`` on Linux, else ``os.cpu_count()``."""
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            physical = core = None
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not key and physical is not None and core is not None:  # blank line ends a processor
                    cores.add((physical, core))
                    physical = core = None
            if physical is not None and core is not None:
                cores.add((physical, core))
    except OSError:
        pass
    return len(cores) or os.cpu_count() or 1


def _check_count(value: object, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ThreadCountError(f"{source} must be a positive integer number of threads, got {value!r}.")
    return value


def _from_env() -> int | str | None:
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return None
    if raw.lower() == INHERIT:
        return INHERIT
    try:
        value = int(raw)
    except ValueError:
        value = raw
    return _check_count(value, f"{ENV_VAR}={raw!r} (or {INHERIT!r} to keep the process's count)")


def user_set_threads() -> bool:
    """Whether the process's count is the user's choice: a thread variable is set, or it differs from torch's
    start-up default (a ``torch.set_num_threads`` call)."""
    if any(os.environ.get(name, "").strip() for name in USER_THREAD_ENV_VARS):
        return True
    return torch.get_num_threads() != torch_default_threads()


def resolve_num_threads(num_threads: int | None = None, default: int | None = SMALL_OP_THREADS) -> int | None:
    """The thread count a loop should run with, or `None` for "leave the current count" (order: module docstring).

    Args:
        num_threads: the caller's explicit count (wins over everything).
        default: the loop's own default when the user chose nothing; `None` keeps the process's count.

    Raises:
        ThreadCountError: `num_threads` or ``$ENCODEC_HF_NUM_THREADS`` is not a positive integer (a `ValueError`).
    """
    if num_threads is not None:
        return _check_count(num_threads, "num_threads")
    env = _from_env()
    if env == INHERIT:
        return None
    if env is not None:
        return int(env)
    if user_set_threads():
        return None
    return default


@contextlib.contextmanager
def torch_threads(num_threads: int | None = None, default: int | None = SMALL_OP_THREADS) -> Iterator[int]:
    """Runs the block with :func:`resolve_num_threads` torch threads and restores the previous count after it.

    Yields the count in effect inside the block. Nested scopes are cheap: an unchanged count is not set again.
    """
    wanted = resolve_num_threads(num_threads, default)
    previous = torch.get_num_threads()
    if wanted is None or wanted == previous:
        yield previous
        return
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(previous)
