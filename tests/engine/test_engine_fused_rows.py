"""Row pipelines (``mbconv_rows``): the frozen forward prefix run row by row through ring buffers.

Bit-exact with the int8 simulation and with the unfused ops; the planned arena holds only rings of a
few rows where the unfused program held whole tensors (no arena buffer of a pipeline is as big as an
expanded tensor it runs); the ring schedule is checked independently of the planner that made it.
"""

import importlib
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import pytest
import torch

from mcutrain.engine.compile import compile_training
from mcutrain.engine.executor import Executor
from mcutrain.engine.executor.compare import differences, qmodel_params, run_engine, simulate
from mcutrain.engine.memory import check_plan
from mcutrain.engine.passes.fuse_rows import STREAM, internal_of, program_of, rings_of, stages_of
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve
from tests.engine.test_engine_equivalence import _fused_away, _simulated_activations

torch.set_num_threads(1)

LR, SEED, CLASSES = 0.1, 7, 4
PAPER = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")


@lru_cache(maxsize=None)
def _qmodel(name: str, res: int):
    return random_qmodel(name, res, CLASSES, seed=2)[0]


@lru_cache(maxsize=None)
def _program(name: str, res: int, scheme: str, row_fusion: str = "max"):
    q = _qmodel(name, res)
    return compile_training(q, resolve(get_builtin(scheme, name), q.spec), lr=LR, seed=SEED, row_fusion=row_fusion)


def _data(res: int, n: int):
    rng = np.random.default_rng(3)
    return rng.integers(-128, 128, (n, 3, res, res)).astype(np.int8), rng.integers(0, CLASSES, n)


def _pipelines(stage):
    return [(i, op) for i, op in enumerate(stage.graph.ops) if op.kind == "mbconv_rows"]


@pytest.mark.parametrize("name, res", [("tiny", 32), ("mcunet-5fps", 64), ("mbv2-w0.35", 48),
                                       ("proxyless-w0.3", 64)])
def test_every_tensor_a_pipeline_outputs_is_the_simulations(name, res):
    q = _qmodel(name, res)
    program = _program(name, res, "last-k:6" if name == "tiny" else "paper-99kb")
    assert len(_pipelines(program.inference)) >= 1 and any(len(op.attr("fused")) > 2
                                                           for _, op in _pipelines(program.inference))
    ex = Executor(program)
    image = _data(res, 1)[0][0]
    ref, ref_logits = _simulated_activations(q, image)
    seen = {}
    np.testing.assert_allclose(ex.predict(image, record=seen), ref_logits, rtol=1e-6, atol=1e-6)
    assert set(ref) - set(seen) == _fused_away(program.inference.graph)
    for tensor in set(ref) & set(seen):
        assert np.array_equal(seen[tensor], ref[tensor]), tensor
    for _, op in _pipelines(program.inference):
        assert np.array_equal(seen[op.outputs[0]], ref[op.outputs[0]])
        assert len(np.unique(seen[op.outputs[0]])) > 10  # not a trivial comparison


CASES = ([("tiny", 32, s) for s in ("last-k:6", "bias-only")]
         + [(n, 48, s) for n in PAPER for s in ("paper-99kb", "last-k:6", "bias-only")])


@pytest.mark.parametrize("name, res, scheme", CASES)
def test_training_with_row_pipelines_is_bit_identical_to_training_without(name, res, scheme):
    fused, plain = _program(name, res, scheme, "max"), _program(name, res, scheme, "off")
    assert _pipelines(fused.train) and all(len(op.attr("fused")) == 1 for _, op in _pipelines(plain.train))
    for p in (fused, plain):
        check_plan(p.train.plan)
        check_plan(p.inference.plan)
    images, labels = _data(res, 2)
    a, b = run_engine(Executor(fused), images, labels), run_engine(Executor(plain), images, labels)
    assert a.losses == b.losses and all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    if name != "tiny" and scheme == "paper-99kb":  # and both are the simulation's
        q = _qmodel(name, res)
        d = differences(a, simulate(q, resolve(get_builtin(scheme, name), q.spec), images, labels, lr=LR,
                                    seed=SEED), qmodel_params(q))
        assert d["max_lsb"] <= 1 and d["loss_rel_error"] <= 1e-5 and d["differing_fraction"] <= 1e-3


def _expanded(op) -> list:
    """The expanded tensors a pipeline runs (outputs of its 1x1 expand stages)."""
    internal = internal_of(op)
    return [internal[st.outputs[0]] for st in stages_of(op)[:-1]
            if st.kind == "conv2d" and st.attr("groups") == 1 and st.outputs[0].endswith(".expanded")]


@pytest.mark.parametrize("name", PAPER)
def test_at_128x128_no_arena_buffer_of_a_pipeline_is_as_big_as_an_expanded_tensor(name):
    program = _program(name, 128, "paper-99kb", "auto")
    for stage in (program.train, program.inference):
        pipelines = _pipelines(stage)
        assert any(_expanded(op) for _, op in pipelines)
        for i, op in pipelines:
            live = [b for b in stage.buffers if b.live_at(i)]
            for t in _expanded(op):
                assert all(b.size < t.nbytes for b in live), (op.name, t.name)
            internal = internal_of(op)
            assert not set(internal) & set(stage.lifetimes)  # intermediate tensors never reach the arena
            for tensor, (c, rows, w, _) in rings_of(op).items():
                info = internal.get(tensor) or stage.graph.tensor(tensor)
                assert (c, w) == (info.shape[1], info.shape[3]) and rows < info.shape[2]


def _check_schedule(op, types) -> None:
    """Replay the schedule with an explicit slot table: every row a stage reads is in its ring slot
    (not overwritten), stages run their rows in order, and the output gets every row once."""
    stages = stages_of(op)
    rings = rings_of(op)
    folded = {b.tensor: next(st for st in stages if st.outputs[0] == b.tensor) for b in program_of(op).folds}
    x = op.inputs[0]
    slots = {t: [None] * rows for t, (_, rows, _, _) in rings.items()}
    done = {st.outputs[0]: 0 for st in stages if st.outputs[0] not in folded}
    fetched = 0
    for s, r in program_of(op).schedule:
        if s == STREAM:
            assert r == fetched
            slots[x][r % len(slots[x])] = r
            fetched += 1
            continue
        st = stages[s]
        assert r == done[st.outputs[0]]
        if st.kind == "add":
            needs = [(st.inputs[0], r, r), (st.inputs[1], r, r)]
        else:
            k, h = types(st.inputs[1]).shape[-1], types(st.inputs[0]).shape[2]
            lo = st.attr("stride") * r - st.attr("pad")
            src = st.inputs[0]  # a folded input's rows are made from its expand conv's input rows
            needs = [(folded[src].inputs[0] if src in folded else src, max(lo, 0), min(lo + k - 1, h - 1))]
        for t, lo, hi in needs:
            for rr in range(lo, hi + 1):
                if t in slots:
                    assert slots[t][rr % len(slots[t])] == rr, (op.name, st.name, t, rr)
                else:
                    assert t == x or done[t] > rr
        out = st.outputs[0]
        if out in slots:
            slots[out][r % len(slots[out])] = r
        done[out] += 1
    final = stages[-1].outputs[0]
    assert done[final] == types(final).shape[2]


@pytest.mark.parametrize("name, res", [("tiny", 32), ("mcunet-5fps", 128), ("mbv2-w0.35", 128),
                                       ("proxyless-w0.3", 128)])
def test_the_ring_schedule_never_reads_an_overwritten_row(name, res):
    program = _program(name, res, "last-k:6" if name == "tiny" else "paper-99kb", "max")
    for stage in (program.train, program.inference):
        for _, op in _pipelines(stage):
            internal = internal_of(op)
            _check_schedule(op, lambda t: internal.get(t) or stage.graph.tensor(t))


def test_a_residual_pipeline_writes_its_output_over_its_input():
    stage = _program("mcunet-5fps", 64, "last-k:6", "max").inference
    inplace = [op for _, op in _pipelines(stage) if op.attr("inplace") == 0]
    assert inplace
    for op in inplace:
        assert stage.storage[op.outputs[0]] == stage.storage[op.inputs[0]]
        assert stage.graph.tensor(op.outputs[0]).shape == stage.graph.tensor(op.inputs[0]).shape


def test_auto_fuses_only_what_lowers_the_peak():
    for name in PAPER:
        auto, most, off = (_program(name, 128, "paper-99kb", m) for m in ("auto", "max", "off"))
        count = lambda p: sum(len(op.attr("fused")) for _, op in _pipelines(p.train))  # noqa: E731
        assert count(auto) <= count(most)
        assert auto.report["arena_bytes"] <= off.report["arena_bytes"]
        assert auto.report["arena_lower_bound_bytes"] <= most.report["arena_lower_bound_bytes"] * 1.02


@pytest.mark.parametrize("kind", ["mbconv_rows", "mbconv_grad"])
def test_the_kernels_keep_their_working_rows_in_the_planned_scratch(monkeypatch, kind):
    """Rings (and the block backward's per-channel gradients) are views of the planned scratch bytes:
    one word less and the kernels cannot run; filled with garbage first, they compute the same."""
    import mcutrain.engine.executor as executor

    program = _program("mcunet-5fps", 48, "paper-99kb", "max")
    images, labels = _data(48, 1)
    reference = Executor(program).train_step(images[0], int(labels[0]))
    original = executor._ArenaIO.__init__

    def garbage(self, arena, op):
        original(self, arena, op)
        if self.scratch is not None:
            self.scratch[...] = np.random.default_rng(0).integers(0, 256, self.scratch.size, dtype=np.uint8)

    monkeypatch.setattr(executor._ArenaIO, "__init__", garbage)
    assert Executor(program).train_step(images[0], int(labels[0])) == reference

    def short(self, arena, op):
        original(self, arena, op)
        if op.kind == kind:
            self.scratch = self.scratch[:-4]

    monkeypatch.setattr(executor._ArenaIO, "__init__", short)
    with pytest.raises(ValueError):
        Executor(program).train_step(images[0], int(labels[0]))


def test_auto_folds_the_cheapest_expand_convs_and_widens_their_windows_under_the_peak(monkeypatch):
    """Proxyless at 128x128 needs some of its first pipeline's expand convs folded: auto folds a set
    that recomputes fewer MACs than folding all, in windows wider than one channel, and the program's
    live peak stays the one one-channel windows give (the windows only take bytes under the peak)."""
    import importlib

    from mcutrain.engine import row_choice
    from mcutrain.engine.row_schedule import fold_shape, foldable

    fuse_rows = importlib.import_module("mcutrain.engine.passes.fuse_rows")  # the module, not the pass
    grown = _program("proxyless-w0.3", 128, "paper-99kb", "auto")
    op = next(op for _, op in _pipelines(grown.train) if program_of(op).folds)
    stages, types = stages_of(op), fuse_rows._Types(grown.train.graph, internal_of(op))
    recomputed = {t: fold_shape(stages, t, types).recomputed_macs for t in foldable(stages)}
    folds = program_of(op).folds
    assert 0 < sum(recomputed[b.tensor] for b in folds) < sum(recomputed.values())
    assert all(b.channels > 1 and b.channels * b.rows * b.width <= op.attr("window") for b in folds)
    inference = next(o for _, o in _pipelines(grown.inference) if o.attr("fused") == op.attr("fused"))
    layout = lambda o: [(b.tensor, b.channels, b.rows, b.width, b.offset) for b in program_of(o).folds]  # noqa: E731
    assert layout(inference) == layout(op)

    monkeypatch.setattr(row_choice, "_estimated", lambda prefix, option, limit: option)
    monkeypatch.setattr(row_choice, "_widest", lambda prefix, seg, limit: (*seg[:3], row_choice.NARROWEST, ()))
    fuse_rows.clear_memos()
    narrow = _program.__wrapped__("proxyless-w0.3", 128, "paper-99kb", "auto")
    assert narrow.report["arena_lower_bound_bytes"] == grown.report["arena_lower_bound_bytes"]
    assert all(b.channels == 1 for op in (o for _, o in _pipelines(narrow.train)) for b in program_of(op).folds)


@contextmanager
def batched_folds(batches=(2, 4, 1)):
    """Compiles inside make every folding pipeline's depthwise stages take ``batches`` rows an event in
    turn, 1 KB windows: the planner batches only where its memory allows; the kernels must take any."""
    fuse_rows = importlib.import_module("mcutrain.engine.passes.fuse_rows")
    choose = fuse_rows.choose

    def forced(prefix, mode, *args):
        return [(i, j, folds, 1024, tuple(batches[n % len(batches)] for n in range(len(folds))) if folds else b)
                for i, j, folds, _, b in choose(prefix, mode, *args)]
    fuse_rows.choose = forced
    fuse_rows.clear_memos()
    try:
        yield
    finally:
        fuse_rows.choose = choose
        fuse_rows.clear_memos()


@pytest.mark.parametrize("name, res, batches", [("proxyless-w0.3", 64, (2, 4, 1)), ("mcunet-5fps", 64, (4,)),
                                                ("mbv2-w0.35", 48, (2,))])
def test_batched_folds_give_the_simulations_integers(name, res, batches):
    """Folded depthwise stages making 2 or 4 rows an event (windows of k + (b - 1) * stride rows) compute
    the same integers as the simulation, the last batch of a tensor short or not."""
    with batched_folds(batches):
        program = _program.__wrapped__(name, res, "paper-99kb", "max")
    folds = [b for _, op in _pipelines(program.inference) for b in program_of(op).folds]
    assert {b.batch for b in folds} >= set(batches) - {1}
    ex = Executor(program)
    image = _data(res, 1)[0][0]
    ref, ref_logits = _simulated_activations(_qmodel(name, res), image)
    seen = {}
    assert np.array_equal(ex.predict(image, record=seen), ref_logits)
    for _, op in _pipelines(program.inference):
        assert np.array_equal(seen[op.outputs[0]], ref[op.outputs[0]])
