"""The resumable run cache of a contribution analysis: ``<out>.runs.jsonl``, one JSON line per run.

Line 1 is a header naming the analysis's identity: the model file's sha256, the data (name and a hash
of its train and validation images) and every training setting that changes a run's result (epochs,
lr, seed, subsets ...). Each further line is one finished run: its spec, its key (a hash of the
identity and the spec) and its record. Lines are appended with ``append_jsonl`` (flushed and
fsynced), by one writer (the analysis's parent process), so a killed analysis keeps every finished
run; a torn last line (a kill in mid-write) is cut off on the next open.

A changed setting is an ERROR naming each setting that differs, not a silent new key: one file then
always holds one analysis, and a typo in ``--lr`` cannot quietly restart hours of work. What only
selects runs (the bias grid, the candidate layers, the ratios, ``--workers``) is not identity:
changing it reuses the finished runs and adds the new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mcutrain.errors import McutrainError
from mcutrain.io.atomic import append_jsonl
from mcutrain.search.runs import RunSpec

FORMAT = "mcutrain-contrib-runs"
VERSION = 1


def run_key(identity: dict, run: RunSpec) -> str:
    """The cache key of ``run`` under ``identity`` (model, data and settings)."""
    text = json.dumps({"identity": identity, "run": run.to_json()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class RunCache:
    """Finished runs of one analysis, read at start and appended to as runs finish."""

    def __init__(self, path: str | os.PathLike, identity: dict):
        self.path, self.identity = Path(path), identity
        self.records: dict[str, dict] = {}
        if self.path.exists():
            self._read()
        else:
            append_jsonl(self.path, {"type": "header", "format": FORMAT, "version": VERSION,
                                     "identity": identity})

    def get(self, run: RunSpec) -> dict | None:
        entry = self.records.get(run_key(self.identity, run))
        return None if entry is None else entry["record"]

    def add(self, run: RunSpec, record: dict) -> None:
        key = run_key(self.identity, run)
        entry = {"type": "run", "key": key, "run": run.to_json(), "record": record}
        append_jsonl(self.path, entry)
        self.records[key] = entry

    def _read(self) -> None:
        _cut_torn_tail(self.path)
        lines = self.path.read_text(encoding="utf-8").splitlines()
        header = _parse(lines[0], self.path, 1) if lines else None
        if not header or header.get("type") != "header" or header.get("format") != FORMAT:
            raise McutrainError(f"{self.path} is not a contribution-analysis run cache; move it away or "
                                f"choose another --out")
        if header.get("version") != VERSION:
            raise McutrainError(f"{self.path}: run cache version {header.get('version')!r} is not "
                                f"supported (this mcutrain writes version {VERSION}); use another --out")
        _check_identity(header.get("identity", {}), self.identity, self.path)
        for n, line in enumerate(lines[1:], start=2):
            entry = _parse(line, self.path, n)
            if entry.get("type") == "run" and entry.get("key") == run_key(self.identity,
                                                                         RunSpec.from_json(entry["run"])):
                self.records[entry["key"]] = entry


def _parse(line: str, path: Path, n: int) -> dict:
    try:
        entry = json.loads(line)
    except ValueError:
        raise McutrainError(f"{path}, line {n}: not JSON; the run cache is damaged (delete the line, "
                            f"or the file to start over)") from None
    if not isinstance(entry, dict):
        raise McutrainError(f"{path}, line {n}: not a JSON object; the run cache is damaged")
    return entry


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline: a run killed while being written, not a finished one."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        os.truncate(path, data.rfind(b"\n") + 1)


def _check_identity(cached: dict, current: dict, path: Path) -> None:
    """Refuse to mix analyses: name every setting that differs between the cache and this command."""
    diffs = [f"{k}: cache {cached.get(k, '(absent)')!r}, now {current.get(k, '(absent)')!r}"
             for k in sorted(set(cached) | set(current)) if cached.get(k) != current.get(k)]
    if diffs:
        raise McutrainError(f"{path} holds runs of another analysis; setting(s) differ: {'; '.join(diffs)}. "
                            f"Rerun with the cached settings to resume, or choose another --out (or delete "
                            f"{path.name}) to start a new analysis")
