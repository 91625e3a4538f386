"""The resumable run cache of a contribution analysis: ``<out>.runs.jsonl``, one JSON line per run.

Line 1 is a header naming the analysis's identity: the int8 model's content identity
(``io.identity.qmodel_identity``: it survives a rewrite of the file's header), the data (name and a
hash of its train and validation images) and every training setting that changes a run's result
(epochs, lr, seed, subsets ...). Each further line is one finished run: its spec, its key (a hash of
the identity and the spec) and its record. Lines are appended with ``append_jsonl`` (flushed and
fsynced), by one writer (the analysis's parent process), so a killed analysis keeps every finished
run; a torn last line (a kill in mid-write) is cut off on the next open.

A cached run is used only if its record is one a run can produce (``check_record``): a validation
accuracy in [0, 1], finite losses (a non-finite last one only in a run marked diverged), finite
non-negative seconds. A record that fails (an edited or damaged line: an accuracy of 7.5 would become
a contribution of +7) is NOT used: its run is recomputed and appended, and ``RunCache.rejected``
names each such line, which ``analyze`` reports. A line that is not JSON stays an error (the file is
not a cache written by mcutrain), as does a header of another analysis.

A changed setting is an ERROR naming each setting that differs, not a silent new key: one file then
always holds one analysis, and a typo in ``--lr`` cannot quietly restart hours of work. What only
selects runs (the bias grid, the candidate layers, the ratios, ``--workers``) is not identity:
changing it reuses the finished runs and adds the new ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from mcutrain.errors import McutrainError
from mcutrain.io.atomic import append_jsonl
from mcutrain.search.runs import RunSpec

FORMAT = "mcutrain-contrib-runs"
VERSION = 2  # 2: the model is identified by its content (io.identity), no longer by its file's sha256


def run_key(identity: dict, run: RunSpec) -> str:
    """The cache key of ``run`` under ``identity`` (model, data and settings)."""
    text = json.dumps({"identity": identity, "run": run.to_json()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class RunCache:
    """Finished runs of one analysis, read at start and appended to as runs finish."""

    def __init__(self, path: str | os.PathLike, identity: dict):
        self.path, self.identity = Path(path), identity
        self.records: dict[str, dict] = {}
        self.rejected: list[str] = []  # "line N: why" for each cached run not used (recomputed instead)
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
            problem = check_entry(entry, self.identity)
            if problem:
                self.rejected.append(f"line {n}: {problem}")
            else:
                self.records[entry["key"]] = entry


def check_entry(entry: dict, identity: dict) -> str | None:
    """Why a cached run line must not be used, or None when it is sound."""
    if entry.get("type") != "run":
        return f"type {entry.get('type')!r} is not 'run'"
    try:
        run = RunSpec.from_json(entry["run"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return f"run {entry.get('run')!r} is not a run spec"
    if entry.get("key") != run_key(identity, run):
        return f"key {entry.get('key')!r} does not match the run {run.label} under this analysis' identity"
    return check_record(entry.get("record"))


def check_record(record) -> str | None:
    """Why a run's record is not one ``runs.run_one`` can produce, or None."""
    if not isinstance(record, dict):
        return "the record is not an object"
    acc = record.get("val_accuracy")
    if not _is_number(acc) or not 0.0 <= acc <= 1.0:
        return f"val_accuracy {acc!r} is not an accuracy in [0, 1]"
    if not isinstance(record.get("diverged"), bool):
        return f"diverged {record.get('diverged')!r} is not true/false"
    losses = record.get("train_loss_per_epoch")
    if not isinstance(losses, list) or not all(_is_number(v, finite=False) for v in losses):
        return "train_loss_per_epoch is not a list of numbers"
    finite_part = losses[:-1] if record["diverged"] else losses  # a diverged run stops at its first NaN/inf loss
    if not all(math.isfinite(v) for v in finite_part):
        return "train_loss_per_epoch holds a non-finite loss in a run not marked diverged"
    for key in ("seconds", "train_seconds"):
        if not _is_number(record.get(key)) or record[key] < 0:
            return f"{key} {record.get(key)!r} is not a finite number >= 0"
    blocks = record.get("prefix_cached_blocks")
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
        return f"prefix_cached_blocks {blocks!r} is not an integer >= 0"
    return None


def _is_number(v, finite: bool = True) -> bool:
    """A JSON number (not a bool) a float can hold; finite unless ``finite`` is False."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        value = float(v)
    except OverflowError:  # an integer of hundreds of digits
        return False
    return not finite or math.isfinite(value)


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
