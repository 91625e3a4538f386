"""Every pass: verified output, its structural invariant, and unchanged numbers with and without it."""

from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
import torch

from mcutrain.engine.autodiff import differentiate, param_gradients
from mcutrain.engine.compile import build_program
from mcutrain.engine.executor import Executor
from mcutrain.engine.frontend import graph_from_qmodel
from mcutrain.engine.ir import Graph, format_graph
from mcutrain.engine.lifetimes import buffers, lifetimes
from mcutrain.engine.loss import append_loss
from mcutrain.engine.passes import (
    INFERENCE_PIPELINE,
    PIPELINE,
    PassOptions,
    fuse_backward,
    fuse_expand,
    fuse_rows,
    fuse_updates,
    inplace,
    insert_updates,
    int8_backward,
    prune,
    reorder,
    run_passes,
)
from mcutrain.engine.passes.fuse_updates import FUSED_KINDS
from mcutrain.engine.passes.inplace import is_inplace_depthwise
from mcutrain.engine.passes.reorder import ready_index
from mcutrain.engine.verify import verify
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve
from mcutrain.train.int8_optim import qas_factors

torch.set_num_threads(1)

OPTIONS = PassOptions(lr=0.1, seed=3)
CASES = [("tiny", 32, "full"), ("tiny", 32, "last-k:6"), ("mbv2-w0.35", 32, "paper-99kb"),
         ("proxyless-w0.3", 32, "bias-only")]


@lru_cache(maxsize=None)
def _compiled(name: str, res: int, scheme: str):
    """(qmodel, plan, forward graph, joint graph)."""
    q = random_qmodel(name, res, 4, seed=3)[0]
    plan = resolve(get_builtin(scheme, name), q.spec)
    forward = graph_from_qmodel(q, plan)
    return q, plan, forward, differentiate(append_loss(forward), plan)


def _after(joint: Graph, last) -> Graph:
    """The graph right after pass ``last`` of the pipeline."""
    graph = joint
    for p in PIPELINE:
        graph = verify(p(graph, OPTIONS))
        if p is last:
            return graph
    raise AssertionError(last)


def _run(program, steps: int = 3, seed: int = 9):
    rng = np.random.default_rng(seed)
    side = program.graph.tensor("image").shape[-1]
    ex = Executor(program)
    losses = [ex.train_step(rng.integers(-128, 128, (1, 3, side, side)).astype(np.int8), int(rng.integers(0, 4)))
              for _ in range(steps)]
    return losses, ex.parameters()


def _same_results(a, b) -> bool:
    return a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])


def test_the_pipeline_is_one_visible_ordered_list():
    assert PIPELINE == (insert_updates, int8_backward, prune, reorder, fuse_updates, fuse_backward, fuse_expand,
                        inplace, fuse_rows)
    assert INFERENCE_PIPELINE == (prune, fuse_expand, inplace, fuse_rows)


@pytest.mark.parametrize("case", CASES)
def test_every_pass_returns_a_verified_graph_and_leaves_its_input_alone(case):
    graph = _compiled(*case)[3]
    for p in PIPELINE:
        text = format_graph(graph)
        out = p(graph, OPTIONS)
        assert verify(out) is out and format_graph(graph) == text, p.__name__
        graph = out
    assert run_passes(_compiled(*case)[3], OPTIONS).ops == graph.ops


@pytest.mark.parametrize("case", CASES)
def test_insert_updates_turns_each_gradient_output_into_one_update(case):
    q, plan, _, joint = _compiled(*case)
    grads = param_gradients(joint)
    g = insert_updates(joint, OPTIONS)
    assert g.outputs == ("loss",)
    updates = [op for op in g.ops if op.phase == "update"]
    assert [op.inputs[:2] for op in updates] == list(grads.items())
    n_convs = len(q.convs())
    for op in updates:
        param = op.inputs[0]
        assert op.kind == ("update_weight" if g.tensor(param).role == "weight" else "update_bias")
        assert (op.attr("lr"), op.attr("seed"), op.attr("rule")) == (0.1, 3, "sr")
        assert op.attr("kept_shape") == g.tensor(op.inputs[1]).shape
        layer = param.rsplit(".", 1)[0]
        if layer == "classifier":
            assert op.attr("tensor_id") == n_convs
            conv = q.classifier
            factors = qas_factors(conv.w_scale, conv.x.scale)
        else:
            conv = next(c for c in q.convs() if c.name == layer)
            assert op.attr("tensor_id") == q.convs().index(conv)
            factors = qas_factors(conv.w_scale, conv.x.scale, conv.frozen_channels)
        expected = factors[0] if op.kind == "update_weight" else factors[1]
        assert np.array_equal(g.constants[op.inputs[2]], expected[: op.attr("kept_shape")[0]])


def _reaches_a_root(graph: Graph) -> set[str]:
    """Names of ops from which a graph output or an update can be reached."""
    needed = set(graph.outputs)
    alive = set()
    for op in reversed(graph.ops):
        if not op.outputs or needed.intersection(op.outputs):
            alive.add(op.name)
            needed.update(op.inputs)
    return alive


@pytest.mark.parametrize("case", CASES)
def test_after_prune_every_op_reaches_an_output_or_an_update(case):
    g = _after(_compiled(*case)[3], prune)
    assert {op.name for op in g.ops} == _reaches_a_root(g)
    used = {n for op in g.ops for n in op.inputs + op.outputs} | set(g.inputs) | set(g.outputs)
    assert set(g.tensors) == used and set(g.constants) <= used
    assert not any(name.endswith(".w_scale") for name in g.constants)  # consumed by insert_updates


def test_prune_cuts_the_training_graph_down_to_the_inference_graph():
    _, _, forward, joint = _compiled("tiny", 32, "last-k:6")
    train = run_passes(joint, OPTIONS, (insert_updates, prune, reorder))
    only_logits = train.with_ops([op for op in train.ops if op.phase == "forward"], outputs=("logits",))
    g = prune(only_logits)
    assert [op.name for op in g.ops] == [op.name for op in forward.ops]  # copies of kept channels gone
    assert all(len(op.outputs) == 1 for op in g.ops)  # mask outputs nobody reads are dropped
    assert not any(t.role in ("mask", "gradient") for t in g.tensors.values())


@pytest.mark.parametrize("case", CASES)
def test_after_reorder_each_update_directly_follows_what_it_waits_for(case):
    g = _after(_compiled(*case)[3], reorder)
    body = [op for op in g.ops if op.phase != "update"]
    for i, op in enumerate(g.ops):
        if op.phase != "update":
            continue
        ready = ready_index(body, op)
        waited_for = g.ops.index(body[ready])
        assert all(x.phase == "update" for x in g.ops[waited_for + 1:i]), op.name
        assert not any(op.inputs[0] in later.inputs for later in g.ops[i + 1:]), op.name  # no old reader after
        assert g.ops[g.producers()[op.inputs[1]]] in g.ops[:i]  # its gradient is complete
    first_update = next(i for i, op in enumerate(g.ops) if op.phase == "update")
    assert any(op.phase == "backward" for op in g.ops[first_update:])  # updates interleave


def _grad_w_before_grad_x(joint: Graph) -> Graph:
    """The same joint graph with each conv's weight gradient computed BEFORE its input gradient."""
    ops = list(joint.ops)
    names = [op.name for op in ops]
    for op in joint.ops:
        if op.kind == "conv2d_grad_x" and op.name.replace("grad_x", "grad_w") in names:
            ix, iw = names.index(op.name), names.index(op.name.replace("grad_x", "grad_w"))
            ops[ix], ops[iw], names[ix], names[iw] = ops[iw], ops[ix], names[iw], names[ix]
    return verify(joint.with_ops(ops))


def _naive_updates(graph: Graph) -> Graph:
    """Updates placed right after their gradient, ignoring write-after-read: the hazard reorder avoids."""
    updates = {op.inputs[1]: op for op in graph.ops if op.phase == "update"}
    ops = []
    for op in graph.ops:
        if op.phase != "update":
            ops.append(op)
            ops.extend(updates[o] for o in op.outputs if o in updates)
    return verify(graph.with_ops(ops))


def test_reorder_waits_for_every_reader_of_the_old_weight():
    _, _, forward, joint = _compiled("tiny", 32, "full")
    swapped = _grad_w_before_grad_x(joint)
    g = reorder(insert_updates(swapped, OPTIONS))
    names = [op.name for op in g.ops]
    for op in g.ops:
        if op.kind == "update_weight" and not op.inputs[0].startswith("classifier"):
            layer = op.inputs[0].rsplit(".", 1)[0]
            if f"{layer}.conv2d_grad_x" in names:
                grad_x, grad_w = names.index(f"{layer}.conv2d_grad_x"), names.index(f"{layer}.conv2d_grad_w")
                assert names.index(op.name) > grad_x > grad_w
    correct = _run(build_program(joint, forward, OPTIONS))
    assert _same_results(_run(build_program(swapped, forward, OPTIONS)), correct)
    hazard = _naive_updates(insert_updates(swapped, OPTIONS))
    assert not _same_results(_run(build_program(hazard, forward, OPTIONS, passes=())), correct)


@pytest.mark.parametrize("case", CASES)
def test_fusion_leaves_no_weight_gradient_buffer(case):
    joint = _compiled(*case)[3]
    before, g = _after(joint, reorder), _after(joint, fuse_updates)
    weight_updates = [op for op in before.ops if op.kind == "update_weight"]
    fused = [op for op in g.ops if op.kind in FUSED_KINDS.values()]
    assert len(fused) == len(weight_updates) and not any(op.kind == "update_weight" for op in g.ops)
    assert not any(op.kind in FUSED_KINDS for op in g.ops)  # no weight gradient tensor is made
    for op in fused:  # the fused op runs where the gradient op ran: after every old-weight reader
        i = g.ops.index(op)
        assert not any(op.inputs[0] in later.inputs for later in g.ops[i + 1:])


def _expanded_tensor_reader(graph: Graph, op) -> str | None:
    """For a frozen 1x1 expand conv whose output only a depthwise conv reads: that conv's name."""
    if op.kind != "conv2d" or op.attr("groups") != 1 or graph.tensor(op.inputs[1]).shape[2:] != (1, 1):
        return None
    readers = [r for r in graph.ops if op.outputs[0] in r.inputs]
    if len(op.outputs) == 1 and len(readers) == 1 and readers[0].kind == "conv2d" and readers[0].attr("groups") > 1:
        return readers[0].name
    return None


@pytest.mark.parametrize("case", CASES + [("mcunet-5fps", 48, "paper-99kb")])
def test_fuse_expand_leaves_no_expanded_tensor_that_only_a_depthwise_conv_reads(case):
    joint = _compiled(*case)[3]
    before, g = _after(joint, fuse_backward), _after(joint, fuse_expand)
    pairs = {_expanded_tensor_reader(before, op) for op in before.ops} - {None}
    fused = {op.name for op in g.ops if op.kind == "pointwise_depthwise"}
    assert fused == pairs and not {_expanded_tensor_reader(g, op) for op in g.ops} - {None}
    assert len(g.ops) == len(before.ops) - len(fused)
    if case[2] == "paper-99kb":
        assert fused  # the frozen prefix of a sparse plan is where it applies
    for op in g.ops:  # a fused op's expand never had a mask (it is not trained)
        if op.kind == "pointwise_depthwise":
            assert not any(u.inputs[0] in op.inputs[1:3] for u in g.ops if u.phase == "update")


@pytest.mark.parametrize("case", CASES)
def test_inplace_only_overwrites_inputs_that_die_there(case):
    g = _after(_compiled(*case)[3], inplace)
    spans = lifetimes(g)
    marked = [(i, op) for i, op in enumerate(g.ops) if op.attr("inplace") is not None]
    assert "requant_grad" in {op.kind for _, op in marked}
    if case[2] == "bias-only":  # frozen depthwise weights: their input gradients overwrite g_acc
        # (or the block's backward runs channel by channel and no expanded gradient is ever whole)
        assert "conv2d_grad_x" in {op.kind for _, op in marked} or "mbconv_grad" in {op.kind for op in g.ops}
    for i, op in marked:
        src, out = g.tensor(op.inputs[op.attr("inplace")]), g.tensor(op.outputs[0])
        assert spans[src.name][1] == i and src.name not in g.outputs and src.dtype == out.dtype
        depthwise = op.kind in ("conv2d", "conv2d_grad_x") and op.attr("groups") > 1
        assert src.shape == out.shape or (depthwise and out.nbytes <= src.nbytes)
    scratch = {b.name for b in buffers(g) if b.kind == "scratch"}
    assert scratch == ({f"{op.name}.scratch" for _, op in marked if is_inplace_depthwise(op)}
                       | {f"{op.name}.scratch" for op in g.ops if op.kind in ("pointwise_depthwise", "mbconv_grad")})


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("left_out", [prune, reorder, fuse_updates, fuse_backward, fuse_expand, inplace, fuse_rows])
def test_results_are_the_same_with_and_without_each_pass(case, left_out):
    _, _, forward, joint = _compiled(*case)
    full = build_program(joint, forward, OPTIONS)
    fewer = build_program(joint, forward, OPTIONS, passes=tuple(p for p in PIPELINE if p is not left_out))
    assert _same_results(_run(full), _run(fewer))
    if left_out in (reorder, fuse_updates, fuse_backward, fuse_expand, inplace, fuse_rows):  # these save memory
        assert full.plan.arena_bytes <= fewer.plan.arena_bytes


def test_options_refuse_what_the_engine_cannot_compile():
    with pytest.raises(Exception, match="latent"):
        replace(OPTIONS, rule="latent")
    with pytest.raises(Exception, match="seed"):
        PassOptions(seed=-1)
