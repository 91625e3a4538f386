"""Independent fine-tunes as Ray tasks: for the analyses and sweeps that outgrow one machine.

Why a second backend: the local process pool (``runs.run_groups``) is bounded by one machine's
cores. ``--ray auto`` starts a local Ray instance (useful mostly to check a cluster run at home);
``--ray HOST:PORT`` joins a running cluster (``ray start --head`` prints that address), and the same
fine-tunes spread over every node's CPUs. docs/cluster.md says how to run one.

What travels
    ``stream`` puts one shared object (for an analysis: the ``RunState``, i.e. the settings, the model
    already fitted to the task's classes, and the data without its test split) into Ray's object store
    ONCE; each worker process deserializes it once and keeps it for every task it runs. So the model and
    data files need only exist where the command runs; the workers need the same Python environment
    (mcutrain and the pinned packages), not the files.

Same results as the pool
    One task per group of runs (a group shares its frozen prefix, as in a pool worker), one CPU and one
    torch thread per task, the same state: every run is seeded by the settings alone, so the records are
    identical to the pool's and to a serial run's (tests/search/test_search_ray.py checks it).

Streaming and failures
    Tasks are Ray streaming generators: each finished run comes back as soon as it is done and goes to
    ``on_item`` in THIS process (the run cache keeps one writer; a killed analysis loses only the runs in
    progress). A task that raises re-raises its original exception here, as a failed pool worker does;
    a lost worker or node is a RuntimeError, as a broken pool is; the other tasks are cancelled. Tasks
    are not retried (a retried generator would send its finished runs twice): rerun to resume.

Ray is imported only here, and only when asked for: ``import mcutrain`` and every run without ``--ray``
never import it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from mcutrain.errors import McutrainError, one_line

AUTO = "auto"  # start a local Ray instance (not Ray's own "auto", which joins a running one)
CONNECT_TIMEOUT_S = 10.0  # how long a cluster's address may take to answer before we give up
PINNED = "ray==2.60.0"  # what requirements.lock installs (named in the error when Ray is missing)
_ADDRESS = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})$")

_SHARED: dict[str, Any] = {}  # in a worker process: the shared object of the current stream, by its ref


def check_address(address: str) -> str:
    """``address`` if it is ``auto`` or HOST:PORT, else a one-line error naming both forms."""
    if address == AUTO:
        return address
    if address.startswith("ray://"):
        raise McutrainError(f"--ray {address}: Ray Client addresses (ray://) are not supported; give the head's "
                            f"HOST:PORT (what `ray start --head` prints, port 6379 by default) or auto")
    m = _ADDRESS.match(address)
    if m is None or not 0 < int(m["port"]) < 65536:
        raise McutrainError(f"--ray {address!r}: use auto (a local Ray instance) or the head node's HOST:PORT, "
                            f"e.g. 10.0.0.5:6379")
    return address


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install the pinned one."""
    try:
        import ray
    except ImportError as e:
        raise McutrainError(f"--ray needs Ray, which is not installed ({e}): pip install {PINNED} "
                            f"(pinned in requirements.lock)") from None
    return ray


@contextlib.contextmanager
def session(address: str, cpus: int | None = None) -> Iterator[Any]:
    """Ray connected for the block. A connection already open is reused and left open (an experiment
    opens one around many analyses: Ray's start-up costs seconds); else this starts (``auto``, with
    ``cpus`` CPUs, None: all) or joins (HOST:PORT) one and disconnects after."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    _connect(ray, check_address(address), cpus)
    try:
        yield ray
    finally:
        ray.shutdown()


def check_reachable(address: str) -> None:
    """A one-line error unless ``address`` is ``auto`` or a HOST:PORT that answers within
    ``CONNECT_TIMEOUT_S``: checked before an analysis starts, so a typo fails at once, and before
    joining, as Ray itself would retry an unreachable address for a minute or more."""
    if check_address(address) == AUTO:
        return
    host, port = _ADDRESS.match(address).group("host", "port")  # type: ignore[union-attr]
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise McutrainError(f"--ray {address}: no Ray head answers there within {CONNECT_TIMEOUT_S:g} s "
                            f"({_reason(e)}); start one with `ray start --head` or use --ray auto") from None


def _connect(ray: Any, address: str, cpus: int | None) -> None:
    if address == AUTO:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
        return
    check_reachable(address)
    t0 = time.monotonic()
    with _stderr_kept() as kept:  # Ray's core logs every retry on stderr: shown only if joining works
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except Exception as e:  # the port answered but is not a Ray head we may join (auth, version ...)
            kept.clear()
            raise McutrainError(f"--ray {address}: could not join a Ray cluster there (Ray gave up after "
                                f"{time.monotonic() - t0:.0f} s: {_reason(e)})") from None


@contextlib.contextmanager
def _stderr_kept() -> Iterator[list]:
    """File descriptor 2 into a temporary file for the block (Ray's C++ core writes there directly),
    written back after unless the block cleared the list it yields (then the lines are dropped)."""
    keep = [True]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield keep
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if keep:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))


def _reason(error: BaseException) -> str:
    """The first line of ``error`` (Ray's messages run to many lines), on one line."""
    lines = str(error).strip().splitlines()
    return one_line(lines[0]) if lines else type(error).__name__


def stream(work: Callable[[Any, Any], Iterable[Any]], items: list[Any], shared: Any,
           on_item: Callable[[Any], None]) -> None:
    """Run ``work(shared, item)`` (a generator) as one Ray task per item, calling ``on_item`` here with
    each value it yields, as it arrives. ``shared`` is stored once; needs an open ``session``."""
    ray = import_ray()
    # No retries: a retried generator would send its finished runs again; a lost worker fails the
    # analysis as a lost pool worker does (rerun to resume: the finished runs are cached).
    task = ray.remote(num_cpus=1, max_retries=0)(_task).options(num_returns="streaming")
    box = [ray.put(shared)]  # in a list, so Ray passes the ref and the worker resolves (and keeps) it once
    pending = [task.remote(work, box, item) for item in items]
    try:
        while pending:
            ready, _ = ray.wait(pending, num_returns=1)
            for generator in ready:
                try:
                    ref = next(generator)
                except StopIteration:
                    pending.remove(generator)
                    continue
                on_item(_get(ray, ref))
    except BaseException:
        for generator in pending:
            with contextlib.suppress(Exception):
                ray.cancel(generator, force=True)
        raise


def _task(work: Callable[[Any, Any], Iterable[Any]], box: list, item: Any) -> Iterator[Any]:
    """Worker side: the shared object, deserialized once per process (a writable copy), then the work."""
    import ray
    import torch

    torch.set_num_threads(1)  # one thread per task, as in a pool worker: results independent of the backend
    key = box[0].hex()
    if key not in _SHARED:
        _SHARED.clear()  # a new stream: the previous one's object is not needed again
        _SHARED[key] = copy.deepcopy(ray.get(box[0]))  # object-store arrays are read-only
    yield from work(_SHARED[key], item)


def _get(ray: Any, ref: Any) -> Any:
    """A task's value; its own exception when it raised (as a failed pool worker's is re-raised)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise
    except ray.exceptions.RayError as e:  # a worker or node lost: like a broken process pool
        raise RuntimeError(f"a Ray task was lost: {_reason(e)}") from e


# ------------------------------------------------------------------------------------ analysis runs


def run_groups(groups: list, state: Any, on_result: Callable[[Any, dict], None], address: str,
               cpus: int | None = None) -> None:
    """``runs.run_groups`` on Ray: one task per group, the ``RunState`` shipped once."""
    with session(address, cpus):
        stream(_group_runs, groups, replace(state, memo={}), lambda pair: on_result(*pair))


def _group_runs(state: Any, group: list) -> Iterator[tuple]:
    """One group back to back (sharing its frozen prefix), each run sent back as it finishes."""
    from mcutrain.search.runs import run_one

    state.memo.clear()
    for run, name in group:
        yield run, run_one(run, name, state)
