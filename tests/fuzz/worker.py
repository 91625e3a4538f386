"""The fuzz suite's worker process: imports mcutrain once, then runs many hostile cases in-process.

Started by ``tests.fuzz.harness.WorkerPool`` as ``python -m tests.fuzz.worker RESPONSE_FD AS_LIMIT``.
Requests come as JSON lines on stdin, one answer per request goes as a JSON line to RESPONSE_FD (a pipe
of its own: the worker's fd 1 and 2 belong to whatever C code or child process writes to them, gcc for
one, and are sent to a log file the parent reads when the worker dies).

Each case runs the way the ``mcutrain`` command would run it: ``mcutrain.cli.main.main(argv)`` with
``sys.stdout``/``sys.stderr`` captured; an exception that escapes ``main`` is printed as the Python
interpreter would print it (a traceback, exit status 1), ``SystemExit`` (argparse) gives its code.
A per-case time limit is an interval timer whose handler raises :class:`CaseTimeout`, a BaseException
so that no ``except Exception`` in mcutrain can swallow it; the worker answers and goes on with the
next case (what a case leaves in the process, architectures loaded from files, is forgotten after
every case; starting a fresh worker after each of the ~40 cases that time out today cost a minute). The address-space limit
(RLIMIT_AS) turns a runaway allocation into a MemoryError (a traceback: a failed case) instead of
swapping the machine; the parent kills a worker that does not answer in time (stuck in C code).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
import time
import traceback


class CaseTimeout(BaseException):
    """Raised by the interval timer when a case runs past its time limit."""


def _on_alarm(signum, frame):
    raise CaseTimeout()


def _run_cli(argv: list[str]) -> tuple[object, str]:
    from mcutrain.cli.main import main

    try:
        return main(argv), "returned"
    except SystemExit as exit_:
        code = exit_.code
        return (0 if code is None else code if isinstance(code, int) else 1), "exited"
    except CaseTimeout:
        raise
    except BaseException:  # what the interpreter does with an uncaught exception: traceback, status 1
        traceback.print_exc(file=sys.stderr)
        return 1, "uncaught"


def _run_restore(request: dict) -> tuple[object, str]:
    """Restore a corrupted saved-parameter buffer into a freshly initialised host library.

    Prints ``restored: code N; parameters unchanged|CHANGED`` and returns 2 when the C API refused
    it (non-zero) and left the parameters and step counter as they were, else 0 (accepted) or 1
    (refused but something changed anyway)."""
    from mcutrain.codegen.host import HostEngine

    engine = HostEngine(request["lib"])
    with open(request["buffer"], "rb") as f:
        data = f.read()
    before, step = engine.save(), engine.step
    import ctypes

    buf = (ctypes.c_uint8 * max(len(data), 1)).from_buffer_copy(data or b"\0")
    code = engine._lib.mct_restore(buf, len(data))
    unchanged = engine.save() == before and engine.step == step
    print(f"mct_restore returned {code}; parameters {'unchanged' if unchanged else 'CHANGED'}", file=sys.stderr)
    if code == 0:
        return 0, "returned"
    return (2 if unchanged else 1), "returned"


def _forget_state() -> None:
    """What one case may leave in the process and the next must not see: architectures loaded from
    files are remembered by name (``mcutrain.models.zoo``)."""
    try:
        from mcutrain.models.zoo import forget_loaded_specs

        forget_loaded_specs()
    except Exception:  # noqa: BLE001 - the module may not have been imported by any case yet
        pass


def run_case(request: dict) -> dict:
    out, err = io.StringIO(), io.StringIO()
    signal.setitimer(signal.ITIMER_REAL, float(request["timeout"]))
    t0 = time.perf_counter()
    timed_out = False
    code, how = None, "timeout"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if request["kind"] == "cli":
                code, how = _run_cli(request["argv"])
            else:
                code, how = _run_restore(request)
    except CaseTimeout:
        timed_out = True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _forget_state()
    return {"code": code, "how": how, "timed_out": timed_out, "seconds": time.perf_counter() - t0,
            "stdout": _clip(out.getvalue()), "stderr": _clip(err.getvalue())}


def _clip(text: str, limit: int = 1 << 20) -> str:
    """Whole unless huge: then its start and its end (the verdict reads the end, and the last line whole
    when it fits)."""
    return text if len(text) <= limit else text[: limit // 4] + "\n[...]\n" + text[-(limit * 3 // 4):]


def main() -> None:
    response_fd, as_limit = int(sys.argv[1]), int(sys.argv[2])
    if as_limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
    signal.signal(signal.SIGALRM, _on_alarm)
    os.environ["TQDM_DISABLE"] = "1"  # no progress bars: stderr holds only what the command says
    import torch

    torch.set_num_threads(1)
    import mcutrain.cli.main  # noqa: F401 - import once, before the first case's clock starts

    answers = os.fdopen(response_fd, "w", buffering=1)
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        answers.write(json.dumps(run_case(json.loads(line))) + "\n")


if __name__ == "__main__":
    main()
