"""Properties over random MobileNet-like networks and random update plans.

For any architecture (2-4 inverted-residual blocks, random channels, kernels, strides, residuals where
legal) and any plan (random bias layers, random weight layers and ratios among them): the memory plan
never lets two live tensors share a byte, the passes (pruning, reordering, fusion, in-place) do not
change a single number, and the engine stays equal to the simulation. In int8 mode (``--backward int8``)
the passes change no bit either and the engine equals an independent re-implementation exactly.
"""

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcutrain.engine.compile import compile_training
from mcutrain.engine.executor import Executor
from mcutrain.engine.executor.compare import differences, qmodel_params, run_engine, simulate
from mcutrain.engine.memory import check_plan
from mcutrain.engine.passes import insert_updates, int8_backward
from mcutrain.models.specs import BlockSpec, NetSpec
from mcutrain.models.zoo import conv_shapes
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import ALLOWED_RATIOS, ConvUpdate, UpdatePlan
from mcutrain.sparse.scheme import conv_kind, kept_channels
from tests.engine.int8_reference import Int8Reference

torch.set_num_threads(1)

RES, CLASSES, LR, STEPS = 16, 3, 0.1, 2
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def net_specs(draw) -> NetSpec:
    """2-4 blocks; block 0 without expand conv, as in the zoo; residual wherever stride 1 and in == out."""
    stem = draw(st.sampled_from([4, 8]))
    blocks, in_ch = [], stem
    for i in range(draw(st.integers(2, 4))):
        mid = None if i == 0 else in_ch * draw(st.integers(1, 3))
        stride = draw(st.sampled_from([1, 2]))
        out = draw(st.sampled_from([in_ch, 4, 8, 12]))
        blocks.append(BlockSpec(in_ch, mid, out, draw(st.sampled_from([3, 5, 7])), stride))
        in_ch = out
    return NetSpec("random", stem, tuple(blocks), default_resolution=RES)


@st.composite
def update_plans(draw, spec: NetSpec) -> UpdatePlan:
    """Random bias layers, random weight layers among them, random ratios; the classifier always."""
    shapes = conv_shapes(spec, RES)
    indices = st.integers(0, len(shapes) - 1)
    bias = draw(st.sets(indices, max_size=len(shapes)))
    weights = {i: draw(st.sampled_from(ALLOWED_RATIOS)) for i in draw(st.sets(st.sampled_from(sorted(bias))))
               } if bias else {}
    convs = tuple(ConvUpdate(i, c.name, conv_kind(c), c.in_ch, i in bias, weights.get(i, 0.0),
                             kept_channels(c.in_ch, weights.get(i, 0.0))) for i, c in enumerate(shapes))
    return UpdatePlan(model=spec.name, scheme="random", convs=convs)


@st.composite
def cases(draw):
    spec = draw(net_specs())
    return spec, draw(update_plans(spec)), draw(st.integers(0, 2**32 - 1))


def _data(seed: int, n: int = STEPS):
    rng = np.random.default_rng(seed % 1000)
    return rng.integers(-128, 128, (n, 3, RES, RES)).astype(np.int8), rng.integers(0, CLASSES, n)


def _disjoint_while_live(stage) -> None:
    """Independent of the planner's checker: tensors in different buffers whose lifetimes meet never
    share a byte; tensors sharing a buffer (in place) hand it over at one op, never live side by side."""
    spans, roots = stage.lifetimes, stage.storage
    names = list(spans)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            lo, hi = max(spans[a][0], spans[b][0]), min(spans[a][1], spans[b][1])
            if lo > hi:
                continue
            if roots[a] == roots[b]:
                assert lo == hi, (a, b)  # the in-place op: the input's last read, the output's first write
                continue
            sa, sb = stage.offset(a), stage.offset(b)
            size_a, size_b = stage.graph.tensor(a).nbytes, stage.graph.tensor(b).nbytes
            assert sa + size_a <= sb or sb + size_b <= sa, (a, b)


@SETTINGS
@given(cases())
def test_the_memory_plan_never_overlaps_live_tensors(case):
    spec, plan, seed = case
    q = random_qmodel(spec, RES, CLASSES, seed=seed % 7)[0]
    program = compile_training(q, plan, lr=LR, seed=seed)
    for stage in (program.train, program.inference):
        check_plan(stage.plan)
        _disjoint_while_live(stage)


@SETTINGS
@given(cases())
def test_passes_do_not_change_results_and_the_engine_matches_the_simulation(case):
    spec, plan, seed = case
    q = random_qmodel(spec, RES, CLASSES, seed=seed % 7)[0]
    images, labels = _data(seed)
    full = run_engine(Executor(compile_training(q, plan, lr=LR, seed=seed)), images, labels)
    bare = run_engine(Executor(compile_training(q, plan, lr=LR, seed=seed, passes=(insert_updates,))), images, labels)
    assert full.losses == bare.losses
    assert all(np.array_equal(full.params[k], bare.params[k]) for k in full.params)
    d = differences(full, simulate(q, plan, images, labels, lr=LR, seed=seed), qmodel_params(q))
    assert d["max_lsb"] <= 1 and d["loss_rel_error"] <= 1e-5
    assert d["bias_error"] <= 1  # each int32 bias within 1 LSB or 1e-5 of its update


# ----------------------------------------------------------------------------------------------
# The integer backward (--backward int8): the same properties, and exactness instead of tolerances

INT8_SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@INT8_SETTINGS
@given(cases())
def test_int8_memory_plan_never_overlaps_live_tensors(case):
    spec, plan, seed = case
    q = random_qmodel(spec, RES, CLASSES, seed=seed % 7)[0]
    program = compile_training(q, plan, lr=LR, seed=seed, backward="int8")
    check_plan(program.train.plan)
    _disjoint_while_live(program.train)


@INT8_SETTINGS
@given(cases())
def test_int8_passes_change_no_bit_and_equal_the_reimplementation(case):
    spec, plan, seed = case
    q = random_qmodel(spec, RES, CLASSES, seed=seed % 7)[0]
    images, labels = _data(seed)
    full = run_engine(Executor(compile_training(q, plan, lr=LR, seed=seed, backward="int8")), images, labels)
    bare = run_engine(Executor(compile_training(q, plan, lr=LR, seed=seed, backward="int8",
                                                passes=(insert_updates, int8_backward))), images, labels)
    assert full.losses == bare.losses
    assert all(np.array_equal(full.params[k], bare.params[k]) for k in full.params)
    reference = Int8Reference(q, plan, lr=LR, seed=seed)
    for image, label in zip(images, labels):
        want = reference.train_step(image, int(label))
    assert all(np.array_equal(full.params[k], want[k]) for k in want)
