"""Fuzz suite: hostile inputs through the CLI and the C API must end in one clear error, nothing else.

What it tries (issue 11, item 8), every case from a fixed list or a fixed seed, so the count is stable:

- ``model-pickle``: ``mcutrain import`` of pickles with code payloads (os.system, eval, exec,
  subprocess, getattr chains, INST/OBJ opcodes, ``__reduce__`` at every protocol, numpy gadgets,
  torch storages); each payload would create a sentinel file, which must never exist. Huge, deep,
  self-referencing and shared-children structures, broken zip archives, and well-formed files with
  hostile values (stride 0, resolution 100000, NaN scales, ...).
- ``int8-model`` / ``float-checkpoint``: flipped bits at seeded positions of the header and the data,
  truncations, and header fields / tensors forged through the container's writer (valid checksum):
  resolution true/0/-1/100000/"32", mismatched class counts, preprocessing offset 1e30, scales
  0/-1/nan/inf/1e30, zero points outside int8, clamp ranges outside int8, frozen_channels 99999,
  stride 3, groups 0, NaN weights...; through ``compile`` + ``finetune`` (int8) and ``eval`` +
  ``quantize`` (float).
- ``int8-graph``: an imported TFLite graph file with flipped bits, truncations and forged fields
  (``corpus_graphs``), through ``export`` and ``finetune``.
- ``dataset-npz`` / ``dataset-folder``: bad labels, shapes, dtypes, counts, object arrays, declared
  zip bombs, non-zip bytes; empty classes, 0-byte and non-image files, huge declared image sizes;
  through ``data show`` and ``pretrain`` or ``finetune``.
- ``scheme-json``, ``arch-json``, ``contrib-json``, ``budget``: wrong types, huge / negative / NaN /
  Infinity numbers, 200k-level nesting, 30 MB files, unknown keys, a scheme name that closes the
  generated C's comment (code injection); through ``scheme check``, ``compile``, ``finetune``,
  ``zoo``, ``pretrain`` and ``search``.
- ``saved-params``: a host build of a tiny program; its ``mct_save`` buffer corrupted (flipped bits,
  erased second half, truncated, zeroed, another model's buffer) must be refused by ``mct_restore``
  (non-zero) with the parameters unchanged.

Harness (``harness.py``, ``worker.py``): cases run in worker processes that import mcutrain once and
call ``mcutrain.cli.main.main(argv)`` in-process, under RLIMIT_AS (3 GiB) and a per-case time limit
(5 s, 15 s for ``search``; an interval timer, after which the worker goes on with the next case; a
worker stuck in C code is killed 10 s later and replaced, as is one that dies). A case passes
("clear error") when: exit status 2; no traceback; the last stderr line is the only
``mcutrain CMD: error: ...`` line (lines before it may be the command's own progress notes, such
as ``compiling tiny @ 16x16 ...``; progress bars are disabled with TQDM_DISABLE, so no bar can hide
or fake anything); where the case says what is wrong, the message names it (one of a few words,
e.g. ``resolution``); within the time limit; nothing written in the case's output folder (not even
a temporary file); no payload ran.

Output: per category, the failing cases (description, command, cause, last stderr line) and the
table tried / clear error / failed, printed at the end of the session (``-s`` shows it) and written to
``<pytest basetemp>/fuzz0/fuzz_summary.json``. ``test_valid_inputs_are_accepted`` runs the inputs
the cases are made from (they must pass), ``test_fuzz_harness.py`` the verdicts themselves. Run it alone with
``PYTHONPATH=$PWD python -m pytest -q -n 0 tests/fuzz -s``; FUZZ_WORKERS sets the number of worker
processes (default 2, 1 under pytest-xdist).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.fuzz import corpus_data, corpus_graphs, corpus_json, corpus_models, corpus_restore
from tests.fuzz.assets import make_assets
from tests.fuzz.harness import Case, WorkerPool, format_failures, format_table, judge, run_category, summary_row

CATEGORIES = {
    "model-pickle": corpus_models.pickle_cases,
    "int8-model": corpus_models.int8_cases,
    "float-checkpoint": corpus_models.float_cases,
    "int8-graph": corpus_graphs.graph_cases,
    "dataset-npz": corpus_data.npz_cases,
    "dataset-folder": corpus_data.folder_cases,
    "scheme-json": corpus_json.scheme_cases,
    "arch-json": corpus_json.arch_cases,
    "contrib-json": corpus_json.contrib_cases,
    "budget": corpus_json.budget_cases,
    "saved-params": corpus_restore.restore_cases,
}

pytestmark = pytest.mark.xdist_group("fuzz")

VALID_SECONDS = 90.0


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def assets(fuzz_root):
    return make_assets(fuzz_root / "assets")


@pytest.fixture(scope="module")
def pool(fuzz_root):
    default = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
    workers = WorkerPool(int(os.environ.get("FUZZ_WORKERS", default)), fuzz_root / "workers")
    yield workers
    workers.close()


@pytest.fixture(scope="module")
def summary(fuzz_root):
    rows: list[dict] = []
    yield rows
    if rows:
        order = list(CATEGORIES)
        rows.sort(key=lambda r: order.index(r["category"]))
        (fuzz_root / "fuzz_summary.json").write_text(json.dumps(rows, indent=1))
        print(f"\n\nfuzz suite: clear errors per category ({fuzz_root / 'fuzz_summary.json'})\n" + format_table(rows))


def test_valid_inputs_are_accepted(assets, pool, fuzz_root):
    """The inputs the cases are made from pass their commands: a case fails for its corruption only."""
    out = fuzz_root / "valid-out"
    data = f"npz:{assets.npz}"
    argvs = [
        ["import", str(assets.pkl), "--format", "tiny-training", "--out", str(out / "imported.safetensors")],
        ["compile", str(assets.int8), "--scheme", "full"],
        ["finetune", str(assets.int8), "--data", data, "--scheme", str(assets.scheme), "--out",
         str(out / "tuned.safetensors"), "--epochs", "1", "--quiet"],
        ["eval", str(assets.float), "--data", data],
        ["quantize", str(assets.float), "--data", data, "--out", str(out / "q.safetensors"), "--calibration-batches", "1"],
        ["data", "show", data],
        ["data", "show", f"folder:{assets.folder}"],
        ["pretrain", "--model", str(assets.arch), "--data", f"folder:{assets.folder}", "--out",
         str(out / "f.safetensors"), "--epochs", "1", "--resolution", "16", "--batch-size", "4", "--quiet"],
        ["scheme", "check", str(assets.scheme), "--model", "tiny"],
        ["zoo", "--model", str(assets.arch)],
        ["search", str(assets.int8), "--contrib", str(assets.contrib), "--budget", "1MB", "--out",
         str(out / "s.json"), "--population", "4", "--generations", "2", "--quiet"],
    ]
    # a generous limit: these run to the end (training, a search), on a machine that may be busy
    cases = [Case("valid", " ".join(a[:2]), a, timeout=VALID_SECONDS) for a in argvs]
    cases += corpus_restore.valid_restore_cases(assets, fuzz_root)
    cases += corpus_graphs.valid_graph_cases(assets, fuzz_root)
    results = pool.run(cases)
    bad = [(c.command, r.get("code"), judge(c, r).last_line) for c, r in zip(cases, results) if r.get("code") != 0]
    assert bad == []


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_hostile_inputs_get_one_clear_error(category, assets, pool, fuzz_root, summary):
    cases = CATEGORIES[category](assets, fuzz_root / category)
    assert cases and all(c.category == category for c in cases)
    verdicts = run_category(pool, cases)
    row = summary_row(category, verdicts)
    summary.append(row)
    print(f"\n{category}: {row['tried']} tried, {row['clear']} clear errors, {row['failed']} failed "
          f"{row['causes'] or ''}")
    if row["failed"]:
        print(format_failures(verdicts))
    if row["failed"]:
        pytest.fail(f"{row['failed']} of {row['tried']} {category} cases failed: {row['causes']}", pytrace=False)
