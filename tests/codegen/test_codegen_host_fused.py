"""The C kernels of the fused op kinds (row pipelines ``mbconv_rows``, channel-by-channel block backwards
``mbconv_grad``) against the NumPy executor, on small networks built to reach every variant.

Each case is a MobileNet-like network and an update plan chosen so that its program has a given set
of fused variants (stride 1 / 2, residual or not, kernels 3 / 5 / 7, folded expand convs, a pipeline
in place over its input, a pipeline that outputs a clamp mask, a streamed image, the lazily computed
pool gradient, recomputed masks, partial-channel ratios, weight / bias gradients leaving the block).
The program is checked to HAVE those variants (``features``), then: every op output of one training
step and one prediction equal (op by op: int8 and masks byte for byte, float32 to 1e-5), logits bit
for bit before and after training, after a few steps the int8 weights identical except <= 1 LSB on
<= 0.1 % of the elements and the loss within 1e-5. A short property test does the same for random
networks and plans.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcutrain.codegen import CODEGEN_PASSES, build_host, compile_for_codegen, generate
from mcutrain.codegen.check import op_by_op, side_by_side
from mcutrain.codegen.host import build
from mcutrain.engine.compile import compile_training
from mcutrain.engine.passes import fuse_updates, reorder
from mcutrain.engine.fused_program import program_of
from mcutrain.engine.passes.fuse_backward import all_parts
from mcutrain.engine.passes.fuse_rows import program_of as rows_program_of
from mcutrain.engine.passes.fuse_rows import stages_of
from mcutrain.models.specs import BlockSpec, NetSpec
from mcutrain.models.zoo import conv_shapes
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import ALLOWED_RATIOS, ConvUpdate, UpdatePlan
from mcutrain.sparse.scheme import conv_kind, kept_channels
from tests.engine.test_engine_fused_rows import batched_folds

LR, SEED, CLASSES, STEPS = 0.1, 3, 4, 3


def _net(name: str, stem: int, rows: list[tuple[int | None, int, int, int]]) -> NetSpec:
    blocks, in_ch = [], stem
    for mid, out, kernel, stride in rows:
        blocks.append(BlockSpec(in_ch, mid, out, kernel, stride))
        in_ch = out
    return NetSpec(name, stem, tuple(blocks), default_resolution=32)


# (mid, out, kernel, stride) per block; block 0 has no expand conv
NETS = {
    "k357": _net("k357", 8, [(None, 8, 3, 1), (24, 8, 5, 1), (24, 16, 7, 2), (48, 16, 3, 1), (48, 24, 5, 1)]),
    "k7s2": _net("k7s2", 8, [(None, 8, 3, 2), (32, 8, 7, 1), (32, 16, 5, 2), (64, 16, 7, 1), (64, 16, 3, 1)]),
    "odd": _net("odd", 8, [(None, 8, 3, 1), (21, 8, 5, 1), (27, 16, 3, 2), (33, 16, 3, 1)]),
}


def _plan(spec: NetSpec, res: int, weights: dict[int, float], bias: set[int]) -> UpdatePlan:
    """Convs by backbone index: ``weights`` index -> ratio (its bias trained too), ``bias`` more
    bias-only layers; negative indices count from the end."""
    shapes = conv_shapes(spec, res)
    n = len(shapes)
    weights = {i % n: r for i, r in weights.items()}
    bias = {i % n for i in bias} | set(weights)
    convs = tuple(ConvUpdate(i, c.name, conv_kind(c), c.in_ch, i in bias, weights.get(i, 0.0),
                             kept_channels(c.in_ch, weights.get(i, 0.0))) for i, c in enumerate(shapes))
    return UpdatePlan(model=spec.name, scheme="test", convs=convs)


# name -> (net, resolution, weights, bias-only layers, row_fusion, the fused variants it must have)
CASES = {
    "partial-ratios": ("k357", 32, {-1: 0.5, -2: 0.25, -3: 1.0, -4: 1.0, -6: 0.5}, {-5, -7}, "auto",
                       {"lazy", "pre", "recompute", "partial", "depthwise update", "stream"}),
    "max-fusion": ("k7s2", 48, {-1: 1.0, -4: 0.25}, {-2, -3}, "max", {"fold", "rows k7", "rows s2", "stream"}),
    "deep-prefix": ("k357", 32, {}, {-1, -2, -3, -4, -5, -6}, "max",
                    {"fold", "rows add", "rows inplace", "rows k5", "rows s1", "stream"}),
    "all-biases": ("k357", 32, {}, set(range(-15, 0)), "auto", {"rows mask", "tail init", "grad inplace", "stream"}),
    "whole-image": ("k357", 32, {0: 1.0, -1: 1.0}, set(), "max", {"image whole", "post"}),
    "no-reorder-unfused": ("k357", 32, {-1: 1.0, -3: 0.5, -4: 1.0}, {-2}, "auto",
                           {"conv2d_grad_b out", "conv2d_grad_w out"}),
    "odd-channels": ("odd", 32, {-1: 1.0, -4: 1.0}, {-2, -3, -5}, "auto", {"grad odd"}),
    "batched-folds": ("k7s2", 48, {-1: 1.0}, {-2, -3}, "max", {"fold", "fold batch", "rows k7", "rows s2"}),
}


def features(program) -> set[str]:
    """The fused variants a program's stages contain."""
    found = set()
    for stage in (program.train, program.inference):
        graph = stage.graph
        found.add("stream" if graph.streams else "image whole")
        for op in graph.ops:
            if op.kind == "mbconv_rows":
                found |= _row_features(graph, op)
            elif op.kind == "mbconv_grad":
                found |= _grad_features(graph, op)
    return found


def _row_features(graph, op) -> set[str]:
    found = {"rows"} | ({"fold"} if rows_program_of(op).folds else set())
    found |= {"rows mask"} if len(op.outputs) == 2 else set()
    found |= {"fold batch"} if any(b.batch > 1 for b in op.attr("program").folds) else set()
    found |= {"rows inplace"} if op.attr("inplace") == 0 else set()
    internal = {t.name: t for t in op.attr("internal")}
    for stage in stages_of(op):
        if stage.kind == "add":
            found.add("rows add")
        else:
            k = (internal.get(stage.inputs[1]) or graph.tensor(stage.inputs[1])).shape[-1]
            found |= {f"rows k{k}", f"rows s{stage.attr('stride')}"}
    return found


def _grad_features(graph, op) -> set[str]:
    grad = program_of(op)
    found = {"grad"} | {name for name in ("lazy", "pre", "post", "recompute") if getattr(grad, name)}
    found |= {"grad odd"} if grad.channels % grad.scratch.pass_channels else set()  # a last channel alone
    found |= {"grad inplace"} if op.attr("inplace") is not None else set()
    for part in all_parts(op):
        if part.kind in ("conv2d_grad_b", "conv2d_grad_w") and part.outputs[0] in op.outputs:
            found.add(f"{part.kind} out")
        if part.kind == "conv2d_grad_x" and len(part.inputs) == 3:
            found.add("tail init")
        if part.kind == "conv2d_grad_w_update":
            weight = graph.tensor(part.inputs[0]).shape
            kept = part.attr("kept_shape")
            found |= {"depthwise update"} if part.attr("groups") > 1 else set()
            found |= {"partial"} if tuple(kept) != tuple(weight) else set()
    return found


@lru_cache(maxsize=None)
def _compiled(case: str):
    net, res, weights, bias, fusion, _ = CASES[case]
    spec = NETS[net]
    q = random_qmodel(spec, res, CLASSES, seed=2)[0]
    plan = _plan(spec, res, weights, bias)
    stream = case != "whole-image"
    if case == "no-reorder-unfused":  # updates stay after the block backward: its gradients leave it whole
        passes = tuple(p for p in CODEGEN_PASSES if p not in (reorder, fuse_updates))
        return compile_training(q, plan, lr=LR, seed=SEED, passes=passes, row_fusion=fusion), res
    if case == "batched-folds":
        with batched_folds():
            return compile_for_codegen(q, plan, lr=LR, seed=SEED, stream_input=stream, row_fusion=fusion), res
    return compile_for_codegen(q, plan, lr=LR, seed=SEED, stream_input=stream, row_fusion=fusion), res


def _data(res: int, n: int, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 3, res, res)).astype(np.int8), rng.integers(0, CLASSES, n)


def _equal_to_numpy(program, res: int, folder, steps: int = STEPS, trace: bool = True) -> None:
    generate(program, folder)
    images, labels = _data(res, steps)
    if trace:
        assert op_by_op(program, build(folder, trace=True), images[0], int(labels[0])) == {}
    r = side_by_side(program, build_host(folder), images, labels, images[:2])
    d = r.differences
    assert r.logits_equal_before and r.logits_equal_after
    assert d["max_lsb"] <= 1 and d["bias_error"] <= 1, d
    assert d["differing_fraction"] <= 1e-3, d
    assert d["loss_rel_error"] <= 1e-5, d
    assert d["moved"] >= 1, d


@pytest.mark.parametrize("case", list(CASES))
def test_fused_kernels_match_the_numpy_executor(tmp_path, case):
    program, res = _compiled(case)
    must = CASES[case][-1]
    assert must <= features(program), must - features(program)
    _equal_to_numpy(program, res, tmp_path)


def test_the_cases_cover_every_fused_variant():
    found = set().union(*(features(_compiled(case)[0]) for case in CASES))
    wanted = {"stream", "image whole", "fold", "fold batch", "rows mask", "rows inplace", "rows add", "rows k3",
              "rows k5", "rows k7", "rows s1", "rows s2", "lazy", "pre", "post", "recompute", "grad inplace",
              "tail init", "depthwise update", "partial", "conv2d_grad_b out", "conv2d_grad_w out", "grad odd"}
    assert wanted <= found, wanted - found


# ----------------------------------------------------------------------------------------------
# Random networks and plans (few examples: each builds a C library)

RES = 16


@st.composite
def _random_case(draw):
    stem = draw(st.sampled_from([4, 8]))
    rows, in_ch = [], stem
    for i in range(draw(st.integers(2, 4))):
        mid = None if i == 0 else in_ch * draw(st.integers(1, 3))
        out = draw(st.sampled_from([in_ch, 4, 8]))
        rows.append((mid, out, draw(st.sampled_from([3, 5, 7])), draw(st.sampled_from([1, 2]))))
        in_ch = out
    spec = _net("random", stem, rows)
    n = len(conv_shapes(spec, RES))
    bias = draw(st.sets(st.integers(0, n - 1), min_size=1))
    weights = {i: draw(st.sampled_from(ALLOWED_RATIOS)) for i in draw(st.sets(st.sampled_from(sorted(bias))))}
    return spec, _plan(spec, RES, weights, bias), draw(st.sampled_from(["auto", "max"])), draw(st.integers(0, 99))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                              HealthCheck.function_scoped_fixture])
@given(_random_case())
def test_random_networks_and_plans_match_the_numpy_executor(tmp_path_factory, case):
    spec, plan, fusion, seed = case
    q = random_qmodel(spec, RES, CLASSES, seed=seed % 5)[0]
    program = compile_for_codegen(q, plan, lr=LR, seed=seed, row_fusion=fusion)
    _equal_to_numpy(program, RES, tmp_path_factory.mktemp("random"), steps=2, trace=False)
