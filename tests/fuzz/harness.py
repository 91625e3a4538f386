"""Harness of the fuzz suite: cases, worker processes under limits, verdicts and the summary table.

A :class:`Case` is one hostile input and one command (``mcutrain`` argv, or a restore of a saved-
parameter buffer through the C API). :class:`WorkerPool` runs cases in ``tests.fuzz.worker``
processes (mcutrain imported once per worker, many cases each) under an address-space limit and a
per-case time limit; a case that kills or hangs its worker is recorded and a new worker started.
:func:`judge` turns what came back into a :class:`Verdict`: a clear error, or the cause of failure.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CASE_SECONDS = 5.0
"""A clear error must come within this; every refusal the suite expects is a load-time check (< 1 s)."""

KILL_GRACE_SECONDS = 10.0
"""How long past its time limit a case may keep a worker before the worker is killed (stuck in C)."""

ADDRESS_SPACE_BYTES = 3 * 2**30
"""RLIMIT_AS of each worker: an imported mcutrain + torch maps about 0.8 GB."""

ERROR_LINE = re.compile(r"^mcutrain [a-z]+(?: [a-z]+)?: error: \S.{4,}$")
"""The one line the CLI prints for a user error (``mcutrain CMD: error: MESSAGE``)."""


@dataclass
class Case:
    category: str
    name: str
    argv: list[str] | None = None  # an mcutrain command line; None: ``restore`` is set
    restore: dict | None = None  # {"lib": ..., "buffer": ...}: a C API restore (saved-parameter buffers)
    out_dir: Path | None = None  # must still be empty afterwards (no output, no temporary leftovers)
    names: tuple[str, ...] = ()  # the message must contain one of these (case-insensitive): names the problem
    sentinel: Path | None = None  # a pickle payload would create this file
    timeout: float = CASE_SECONDS

    @property
    def command(self) -> str:
        if self.argv is None:
            return "mct_restore(buffer)"
        return "mcutrain " + " ".join(self.argv)

    def request(self) -> dict:
        if self.argv is not None:
            return {"kind": "cli", "argv": self.argv, "timeout": self.timeout}
        return {"kind": "restore", **self.restore, "timeout": self.timeout}


@dataclass
class Verdict:
    case: Case
    clear: bool
    cause: str  # "" when clear
    last_line: str
    seconds: float
    result: dict = field(default_factory=dict)


def judge(case: Case, result: dict) -> Verdict:
    """A clear error: exit 2, no traceback, stderr ends with exactly one ``mcutrain CMD: error: ...`` line
    (lines before it are allowed: a command's progress notes such as ``compiling tiny @ 16x16 ...``;
    progress bars are disabled in the workers), the message names the problem when the case says what
    that is, within the time limit, with no output written and no payload run."""
    stderr = result.get("stderr", "")
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    seconds = float(result.get("seconds", 0.0))
    error_lines = [line for line in lines if ": error:" in line]
    traceback_seen = "Traceback (most recent call last)" in stderr + result.get("stdout", "")
    code = result.get("code")
    if case.sentinel is not None and case.sentinel.exists():
        cause = "PAYLOAD RAN: the pickle's code was executed"
    elif result.get("died"):
        cause = f"worker died ({result['died']})"
    elif result.get("timed_out"):
        cause = f"hang: no answer within {case.timeout:g} s"
    elif traceback_seen:
        cause = "traceback: " + _exception_line(stderr)
    elif code == 0:
        cause = "accepted: exit 0"
    elif code != 2:
        cause = f"exit status {code}, expected 2"
    elif case.argv is not None and not (ERROR_LINE.match(last) and len(error_lines) == 1):
        cause = "stderr does not end in exactly one 'mcutrain CMD: error: ...' line"
    elif case.names and not any(n.lower() in last.lower() for n in case.names):
        cause = f"message does not name the problem (expected one of {', '.join(case.names)})"
    elif seconds > case.timeout:
        cause = f"slow: {seconds:.1f} s"
    elif case.out_dir is not None and any(case.out_dir.iterdir()):
        cause = "output written: " + ", ".join(sorted(p.name for p in case.out_dir.iterdir()))
    else:
        cause = ""
    if not last and result.get("stdout"):
        last = "(stdout) " + result["stdout"].strip().splitlines()[-1]
    return Verdict(case, cause == "", cause, last if len(last) <= 300 else last[:240] + " ... " + last[-50:],
                   seconds, result)


def _exception_line(stderr: str) -> str:
    """The exception line of the last traceback in ``stderr`` (type and message)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b", line):
            return line.split(":", 1)[0]
    return lines[-1][:80] if lines else "?"


class _Worker:
    """One worker process: JSON requests on its stdin, JSON answers on a pipe of its own."""

    def __init__(self, log_dir: Path, index: int):
        self.log = log_dir / f"worker-{index}-{time.monotonic_ns()}.log"
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1",
                   PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.fuzz.worker", str(write_fd), str(ADDRESS_SPACE_BYTES)],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                cwd=log_dir, env=env)
        os.close(write_fd)
        self.fd = read_fd
        self.buffer = b""
        self.case: int | None = None
        self.deadline = 0.0
        ready = self.read_line(time.monotonic() + 180)
        if ready is None or not json.loads(ready).get("ready"):
            raise RuntimeError(f"fuzz worker did not start: {self.log_tail()}")

    def send(self, index: int, case: Case) -> None:
        self.case = index
        self.deadline = time.monotonic() + case.timeout + KILL_GRACE_SECONDS
        self.proc.stdin.write((json.dumps(case.request()) + "\n").encode())
        self.proc.stdin.flush()

    def read_line(self, deadline: float) -> str | None:
        """One answer line, or None on EOF (the worker died) or when ``deadline`` passes."""
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def has_line(self) -> bool:
        return b"\n" in self.buffer

    def log_tail(self) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1][:200] if lines else ""

    def stop(self) -> str:
        """Kill the process; returns how it ended (a signal name or exit status)."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        code = self.proc.wait()
        os.close(self.fd)
        if code < 0:
            import signal

            return signal.Signals(-code).name
        return f"exit status {code}"


class WorkerPool:
    """Runs cases on ``size`` workers; a worker that dies or stops answering is replaced (one whose case
    timed out answers, and goes on)."""

    def __init__(self, size: int, log_dir: Path):
        self.size, self.log_dir = size, Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.workers: list[_Worker] = []
        self.restarts = 0

    def _worker(self, slot: int) -> _Worker:
        while len(self.workers) <= slot:
            self.workers.append(_Worker(self.log_dir, len(self.workers)))
        return self.workers[slot]

    def _replace(self, slot: int) -> None:
        self.workers[slot].stop()
        self.workers[slot] = _Worker(self.log_dir, slot)
        self.restarts += 1

    def run(self, cases: list[Case]) -> list[dict]:
        results: list[dict | None] = [None] * len(cases)
        todo = list(range(len(cases)))[::-1]
        slots = list(range(min(self.size, max(1, len(cases)))))
        for slot in slots:
            self._worker(slot)
        busy: dict[int, int] = {}
        while todo or busy:
            for slot in slots:
                if slot not in busy and todo:
                    index = todo.pop()
                    self.workers[slot].send(index, cases[index])
                    busy[slot] = index
            self._collect(busy, cases, results)
        return results  # type: ignore[return-value]

    def _collect(self, busy: dict[int, int], cases: list[Case], results: list) -> None:
        fds = {self.workers[s].fd: s for s in busy}
        ready_slots = [s for s in busy if self.workers[s].has_line()]
        if not ready_slots:
            wait = max(0.0, min(self.workers[s].deadline for s in busy) - time.monotonic())
            readable = select.select(list(fds), [], [], wait)[0]
            ready_slots = [fds[fd] for fd in readable]
        for slot in ready_slots:
            worker, index = self.workers[slot], busy.pop(slot)
            line = worker.read_line(time.monotonic() + 5)
            if line is None:  # EOF: the case killed the worker (a signal, the memory limit, os._exit)
                tail = worker.log_tail()
                how = worker.stop()
                results[index] = {"died": how + (f": {tail}" if tail else ""), "stderr": tail}
                self.workers[slot] = _Worker(self.log_dir, slot)
                self.restarts += 1
                continue
            results[index] = json.loads(line)
        now = time.monotonic()
        for slot in [s for s in busy if self.workers[s].deadline < now]:  # stuck where no signal reaches
            index = busy.pop(slot)
            results[index] = {"timed_out": True, "seconds": now - self.workers[slot].deadline + cases[index].timeout,
                              "stderr": "", "killed": True}
            self._replace(slot)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []


def run_category(pool: WorkerPool, cases: list[Case]) -> list[Verdict]:
    return [judge(case, result) for case, result in zip(cases, pool.run(cases))]


def summary_row(category: str, verdicts: list[Verdict]) -> dict:
    failed = [v for v in verdicts if not v.clear]
    return {"category": category, "tried": len(verdicts), "clear": len(verdicts) - len(failed),
            "failed": len(failed),
            "causes": dict(Counter(_cause_kind(v.cause) for v in failed)),
            "failures": [{"case": v.case.name, "command": v.case.command, "cause": v.cause,
                          "last_line": v.last_line} for v in failed]}


def _cause_kind(cause: str) -> str:
    return cause.split(":", 1)[0]


def format_table(rows: list[dict]) -> str:
    head = f"{'category':<18} {'tried':>6} {'clear error':>12} {'failed':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['category']:<18} {r['tried']:>6} {r['clear']:>12} {r['failed']:>7}")
    total = {k: sum(r[k] for r in rows) for k in ("tried", "clear", "failed")}
    lines.append("-" * len(head))
    lines.append(f"{'total':<18} {total['tried']:>6} {total['clear']:>12} {total['failed']:>7}")
    return "\n".join(lines)


def format_failures(verdicts: list[Verdict]) -> str:
    lines = []
    for v in verdicts:
        if not v.clear:
            command = " ".join(a if len(a) < 120 else a[:100] + "..." for a in v.case.command.split(" "))
            lines.append(f"  [{v.cause}] {v.case.name}\n      $ {command}\n      > {v.last_line}")
    return "\n".join(lines)


def fresh_dir(root: Path, name: str) -> Path:
    """A new empty folder under ``root`` for one case (its files and its output folder)."""
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=re.sub(r"[^\w.-]+", "_", name)[:40] + "-", dir=root))
    return path
