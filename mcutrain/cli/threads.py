"""How many threads torch computes with, and how its idle threads wait: chosen once by the CLI.

Why this exists: torch's defaults (one OpenMP thread per core, threads that spin while they wait at
a barrier) are right for a machine nobody else uses. With one other busy process on a 2-core machine
a finetune step took 5.5-7.7 s instead of 0.06 s (issue 12): at every barrier (hundreds per step) a
spinning thread burns the time slice that the thread it waits for needs. ``bench/threads.py``
measures it (docs/results/threads.md).

The rule, applied by ``mcutrain`` unless the user chose:

* Idle threads sleep instead of spinning (``OMP_WAIT_POLICY=passive``). That removes the collapse
  under contention and costs little without it. It must be in the environment before torch is
  imported (the OpenMP runtime reads it when it loads), so ``prepare_environment`` runs first thing
  in ``main``. A user's own ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME`` is kept.
* Threads = the physical cores this process may run on (its CPU affinity, its cgroup CPU quota),
  at most ``THREADS_CAP``. The load of the machine is not subtracted: the load average is a
  machine-wide figure a minute old, blind to a process that starts after us, and with sleeping
  waiters a busy neighbour costs a share of the CPU, not a collapse. The cap: at batch 32 and
  64-128 px most of the simulation's tensors are a few times torch's parallel grain (32768
  elements), so threads beyond a few only add barriers.
* ``OMP_NUM_THREADS`` set by the user is kept; ``--threads N`` overrides both.

Worker processes: the only command with workers is ``analyze --workers N``, whose workers (and the
parent, for ``--workers 1``) each compute with one torch thread (``search/runs.py``); the parent
only waits. So no default multiplies threads by processes.

Inter-op threads (``torch.set_num_interop_threads``) are left alone: they serve only TorchScript's
``fork``, which mcutrain does not use, and can be set only before any inter-op work.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterable, MutableMapping
from pathlib import Path

MAX_THREADS = 1024
THREADS_CAP = 8
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
CPU_TOPOLOGY = Path("/sys/devices/system/cpu")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def thread_count(text: str) -> int:
    """``--threads``: an integer 1..MAX_THREADS."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer 1..{MAX_THREADS}, got {text!r:.40}") from None
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be an integer 1..{MAX_THREADS}, got {value}")
    return value


thread_count.__name__ = "thread count"  # argparse names the type in "invalid <name> value" messages


def prepare_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Before torch is imported: idle OpenMP threads sleep rather than spin, unless the user chose.
    Once torch is loaded the runtime has read its settings, so nothing is changed then."""
    if "torch" in sys.modules or any(name in environ for name in WAIT_VARIABLES):
        return
    environ["OMP_WAIT_POLICY"] = "passive"


def apply_threads(requested: int | None, environ: MutableMapping[str, str] = os.environ) -> int | None:
    """Set the thread count: ``requested`` (``--threads``), else the user's ``OMP_NUM_THREADS``
    (left to torch, which reads it), else ``default_threads()``. Returns the count set, None when
    the environment decides. A default count (at most the cores) reaches a torch not imported yet
    through ``OMP_NUM_THREADS``, which it reads when it loads; an explicit ``--threads`` imports torch
    now, because torch caps ``OMP_NUM_THREADS`` at the cores and only ``set_num_threads`` goes above
    (the API behind each command imports torch only when its work starts, after this)."""
    if requested is None and "OMP_NUM_THREADS" in environ:
        return None
    count = requested if requested is not None else default_threads()
    torch = sys.modules.get("torch")
    if torch is None and requested is not None:
        import torch
    if torch is not None:
        torch.set_num_threads(count)
    else:
        environ["OMP_NUM_THREADS"] = str(count)
    return count


def default_threads() -> int:
    return max(1, min(physical_cores(allowed_cpus()), cgroup_cpu_limit() or MAX_THREADS, THREADS_CAP))


def allowed_cpus() -> set[int]:
    """The logical CPUs this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def physical_cores(cpus: Iterable[int], topology: Path = CPU_TOPOLOGY) -> int:
    """Distinct physical cores among ``cpus``: two hyperthreads of one core share its arithmetic
    units, so a second thread there adds barriers, not speed. Unknown topology: one core per CPU."""
    cores = set()
    for cpu in cpus:
        try:
            folder = topology / f"cpu{cpu}" / "topology"
            cores.add(((folder / "physical_package_id").read_text().strip(), (folder / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def cgroup_cpu_limit(path: Path = CGROUP_CPU_MAX) -> int | None:
    """Whole CPUs of a cgroup v2 quota (a container started with ``--cpus 2`` on a large machine
    still sees every CPU in its affinity); None without a quota. A fraction rounds down: a
    thread beyond the quota waits for the next period."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, math.floor(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        return None
