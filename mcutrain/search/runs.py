"""The fine-tunes of a contribution analysis: what one run trains, and running many, here or in workers.

A run is a ``RunSpec``: the biases of the last ``bias`` convs, optionally the weight of conv ``layer``
at ``ratio``, and always the classifier; ``finetune`` (the int8 simulation) trains it from the same
starting model and reports its validation accuracy.

Sharing the frozen prefix
    ``finetune`` caches the int8 activations in front of the first trained block in ``prefix_memo``
    under the scheme's NAME (plus the model object, split block, data and seed). Runs are therefore
    named by a hash of exactly what those activations depend on: the split block and the prefix
    convs' parameters after the channel permutation the run's plan applies. Two runs with the same
    name have bit-identical cached activations, so they may share them; runs whose permutation only
    touches trained blocks share with the bias runs of the same block. Runs with the same name form
    a group; a group runs in one process, back to back, so the prefix is computed once per group.

Determinism
    Every run computes with one torch thread, in the parent (``workers=1``) as in a worker or a Ray
    task (``ray_backend``), so the results do not depend on ``--workers`` or ``--ray``: each run is
    seeded by the settings alone.

Never the test split
    The runs see a dataset whose test split is one validation image (``without_test``): the
    analysis selects schemes, so it must not look at test, and it saves finetune's test passes.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import queue as queue_module
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace

import torch

from mcutrain.data import ImageSet, SplitDataset, load_dataset
from mcutrain.quant.qmodel import QModel
from mcutrain.sparse.permute import permute_for_plan
from mcutrain.sparse.scheme import Scheme, backbone_convs, last_k_layers, resolve
from mcutrain.sparse.table import ConvTable, save_table_scheme
from mcutrain.train import model_kind as mk
from mcutrain.train.finetune import FinetuneConfig, auto_lr, finetune
from mcutrain.train.lr_auto import LrChoice

DRAIN_SECONDS = 2.0  # how long to collect finished runs from the queue after a worker failed
PARENT_POLL_SECONDS = 1.0  # how often a worker checks that the analysis that started it still runs
SEED_STRIDE = 1000  # repeat s of a run fine-tunes with seed + SEED_STRIDE * s (``RunSpec.finetune_seed``)


@dataclass(frozen=True)
class RunSpec:
    """One fine-tune: biases of the last ``bias`` convs (+ the weight of ``layer`` at ``ratio``)."""

    bias: int
    layer: int | None = None
    ratio: float = 0.0
    seed: int = 0  # the repeat (``--seeds``): 0 is the analysis's own seed, s > 0 another draw of the same run

    @property
    def label(self) -> str:
        if self.layer is not None:
            name = f"w{self.layer}@{self.ratio:g}+b{self.bias}"
        else:
            name = f"b{self.bias}" if self.bias else "last-layer"
        return f"{name}#s{self.seed}" if self.seed else name

    def to_json(self) -> dict:
        """Seed 0 writes no seed key, so single-seed caches keep their keys (``cache.run_key``)."""
        d = {"bias": self.bias, "layer": self.layer, "ratio": self.ratio}
        return {**d, "seed": self.seed} if self.seed else d

    @classmethod
    def from_json(cls, d: dict) -> "RunSpec":
        seed = int(d.get("seed", 0))
        if seed < 0:
            raise ValueError(f"seed {seed} < 0")
        return cls(int(d["bias"]), None if d["layer"] is None else int(d["layer"]), float(d["ratio"]), seed)

    def finetune_seed(self, base: int) -> int:
        """The fine-tune seed of this repeat: data order, subset draws and stochastic rounding change
        with it; the model, the split and the run do not. Strided so repeats never reuse the
        ``seed + 1`` / ``seed + 2`` streams ``finetune`` draws its evaluation subsets from."""
        return base + SEED_STRIDE * self.seed

    def scheme(self, model: str, n_convs: int, name: str) -> Scheme:
        """The run as a Scheme (validated by ``finetune`` through ``resolve``)."""
        weights = ((self.layer, self.ratio),) if self.layer is not None else ()
        return Scheme(model, name, tuple(range(n_convs - self.bias, n_convs)), weights,
                      description=f"contribution analysis run {self.label}")


def prefix_name(model: mk.TrainableModel, run: RunSpec) -> str:
    """The scheme name of ``run``: a hash of what its cached prefix activations depend on."""
    if mk.is_graph(model):
        return f"contrib-g{run.bias}"  # not permuted: the trained convs (the last ``bias``) decide
    spec = model.spec
    scheme = run.scheme(spec.name, len(backbone_convs(spec)), "probe")
    last_k_layers(spec, run.bias, "bias")
    plan = resolve(scheme, spec)
    permuted, _ = permute_for_plan(model, plan)
    split = _first_trained_block(model, plan.lowest_trained_conv)
    h = hashlib.sha256(repr(split).encode())
    prefix = [] if split is None else [permuted.first_conv] + [c for b in permuted.blocks[:split] for c in b.convs()]
    for conv in prefix:
        for array in (conv.weight, conv.bias, conv.w_scale):
            h.update(array.tobytes())
    return f"contrib-s{'x' if split is None else split}-{h.hexdigest()[:12]}"


def _first_trained_block(model: QModel, low: int | None) -> int | None:
    """The block ``finetune`` caches up to (see ``prefix_cache.first_trained_block``); None: no cache."""
    if low is None:
        return len(model.blocks)
    if low == 0:
        return None
    index = 1
    for b, block in enumerate(model.blocks):
        index += len(block.convs())
        if low < index:
            return b
    raise ValueError(f"conv {low} is not in {model.spec.name}")


# ----------------------------------------------------------------------------------------------- one run


@dataclass
class RunState:
    """What every run of one process shares: the settings, the model, the data and the memo."""

    cfg: FinetuneConfig
    model: mk.TrainableModel
    dataset: SplitDataset
    memo: dict = field(default_factory=dict)

    @property
    def table(self) -> ConvTable:
        return mk.conv_table(self.model)


def load_state(cfg: FinetuneConfig) -> RunState:
    return run_state(cfg, mk.load_trainable(cfg.model), load_dataset(cfg.data, seed=cfg.seed))


def run_state(cfg: FinetuneConfig, model: mk.TrainableModel, dataset: SplitDataset) -> RunState:
    """The state runs share: the model already fitted to the task's classes (a new head, made once),
    so every run starts from the same model object and the frozen-prefix cache, keyed by it, is shared
    (``finetune`` fits a model only when the classes differ)."""
    return RunState(cfg, mk.fit_task(model, tuple(dataset.classes)), without_test(dataset))


def without_test(dataset: SplitDataset) -> SplitDataset:
    """The data with its test split replaced by one validation image. ``finetune`` reports test
    accuracy before and after training; the analysis must never look at test, and those two passes
    (plus caching the test prefix) were most of a deep run's time. Training and validation are unchanged."""
    return replace(dataset, test=ImageSet(dataset.val.images[:1], dataset.val.labels[:1]))


@contextlib.contextmanager
def scheme_file(run: RunSpec, name: str, table: ConvTable) -> Iterator[str]:
    """``run`` as a temporary scheme file (finetune takes a scheme by name or file), removed after."""
    fd, path = tempfile.mkstemp(prefix="mcutrain-analyze-", suffix=".json")
    os.close(fd)
    try:
        save_table_scheme(path, run.scheme(table.model, len(table.names), name), table)
        yield path
    finally:
        os.unlink(path)


def run_one(run: RunSpec, name: str, state: RunState) -> dict:
    """Fine-tune ``run`` and return its record: validation accuracy (never test) and timings."""
    t0 = time.perf_counter()
    with scheme_file(run, name, state.table) as path:
        cfg = replace(state.cfg, scheme=path, seed=run.finetune_seed(state.cfg.seed))
        result = finetune(cfg, progress=False, model=state.model, dataset=state.dataset, prefix_memo=state.memo)
    return {"val_accuracy": result["val_accuracy"], "train_loss_per_epoch": result["train_loss_per_epoch"],
            "diverged": result["diverged"], "train_seconds": result["seconds"],
            "seconds": round(time.perf_counter() - t0, 3), "prefix_cached_blocks": result["prefix_cached_blocks"]}


def choose_run_lr(run: RunSpec, state: RunState) -> LrChoice:
    """``--lr auto`` for an analysis: chosen once, on ``run`` (the analysis's largest), for all runs."""
    with scheme_file(run, "lr-auto", state.table) as path, _one_thread():
        return auto_lr(replace(state.cfg, scheme=path), state.model, state.dataset, state.memo)


Group = list[tuple[RunSpec, str]]
OnResult = Callable[[RunSpec, dict], None]


def run_groups(groups: list[Group], state: RunState, workers: int, on_result: OnResult,
               ray: str | None = None) -> None:
    """Run every group, calling ``on_result`` in this process as each run finishes (one writer): on Ray
    when ``ray`` names where (``auto`` or HOST:PORT, ``ray_backend``), else here or in ``workers``
    local processes. Nothing to run starts nothing (a resumed analysis does not wait for Ray)."""
    if ray is not None and groups:
        from mcutrain.search import ray_backend  # imports ray: only when asked for

        ray_backend.run_groups(groups, state, on_result, ray, cpus=workers if workers > 1 else None)
    elif workers <= 1 or len(groups) <= 1:
        _run_here(groups, state, on_result)
    else:
        _run_in_workers(groups, state.cfg, min(workers, len(groups)), on_result)


def _run_here(groups: list[Group], state: RunState, on_result: OnResult) -> None:
    with _one_thread():
        for group in groups:
            state.memo.clear()  # the previous group's prefix is not needed again
            for run, name in group:
                on_result(run, run_one(run, name, state))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread while runs compute here, as in a worker, then the caller's setting again."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------- workers

_WORKER: dict = {}


def _init_worker(cfg: FinetuneConfig, results, parent: int) -> None:
    """Worker start: one thread, the model and data loaded once, the queue results go back on, and
    a watchdog so a killed analysis leaves no orphan worker training for nobody."""
    torch.set_num_threads(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _WORKER["state"] = load_state(cfg)
    _WORKER["results"] = results


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def _run_group(group: Group) -> int:
    """A worker runs one group back to back (sharing its prefix), sending each run as it finishes."""
    state: RunState = _WORKER["state"]
    state.memo.clear()
    for run, name in group:
        _WORKER["results"].put((run, run_one(run, name, state)))
    return len(group)


def _run_in_workers(groups: list[Group], cfg: FinetuneConfig, workers: int, on_result: OnResult) -> None:
    """Groups go to ``workers`` spawned processes; finished runs stream back on a queue so a killed
    analysis loses only the runs in progress, and this process stays the cache's only writer."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    pending = sum(len(g) for g in groups)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(cfg, results, os.getpid()))
    try:
        futures = [pool.submit(_run_group, g) for g in groups]
        while pending:
            try:
                on_result(*results.get(timeout=0.5))
                pending -= 1
            except queue_module.Empty:
                pending -= _check_workers(futures, results, on_result, pending)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _check_workers(futures: list[Future], results, on_result: OnResult, pending: int) -> int:
    """Raise a worker's failure (or a lost result), after keeping the runs that did finish: they
    may still be on the queue. Returns how many runs it collected."""
    failed = next((f for f in futures if f.done() and f.exception() is not None), None)
    if failed is None and not all(f.done() for f in futures):
        return 0
    collected, deadline = 0, time.monotonic() + DRAIN_SECONDS
    while collected < pending and time.monotonic() < deadline:
        try:
            on_result(*results.get(timeout=0.1))
            collected += 1
        except queue_module.Empty:
            continue
    if failed is not None:
        raise failed.exception()
    if collected < pending:
        raise RuntimeError(f"the workers finished but {pending - collected} run results never arrived")
    return collected
