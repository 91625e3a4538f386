"""The engine with general conv geometry (issue 13): kh x kw kernels, per-axis strides, asymmetric
padding, non-square 1- or 3-channel inputs. The forward is bit-exact with the int8 simulation, the
training steps end where the simulation's do (the tolerance of test_engine_equivalence), the fused
passes leave every general conv unfused (their predicates) and still fuse the zoo-geometry ops."""

from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.engine.compile import compile_training
from mcutrain.engine.executor import Executor
from mcutrain.engine.executor.compare import differences, qmodel_params, run_engine, simulate
from mcutrain.engine.executor.kernels import KERNELS
from mcutrain.engine.fused_program import program_of
from mcutrain.engine.ir import Op, make_attrs
from mcutrain.engine.ops import OUTPUT_TYPES, conv_geometry, has_general_geometry
from mcutrain.engine.passes.fuse_backward import block_fusable, update_ops
from mcutrain.engine.passes.fuse_expand import _is_depthwise_of, _is_plain_expand
from mcutrain.engine.passes.fuse_rows import row_fusable, stages_of
from mcutrain.quant.sim_model import Int8Add, Int8Conv, Int8Net, Int8Pool
from mcutrain.quant.sim_ops import exact_conv, input_grad, partial_weight_grad
from mcutrain.sparse import get_builtin, resolve
from tests.helpers.geometry import general_qmodel, int8_images
from tests.helpers.windows import draw_window

LR, SEED, STEPS = 0.1, 11, 4


@lru_cache(maxsize=None)
def _model(variant: str):
    return general_qmodel(variant)


def _simulated(q, image: np.ndarray) -> dict:
    net, acts = Int8Net(q), {}
    for path, module in net.named_modules():
        if isinstance(module, (Int8Conv, Int8Add, Int8Pool)):
            name = module.q.name if isinstance(module, Int8Conv) else ("pool" if path == "pool" else f"{path}_out")
            module.register_forward_hook(
                lambda m, a, out, name=name: acts.__setitem__(name, out.numpy().astype(np.int8)))
    with torch.no_grad():
        net.classifier(net.features(torch.from_numpy(image[None].astype(np.float32))))
    return acts


def _general_op_names(graph) -> set[str]:
    return {op.name for op in graph.ops if op.kind == "conv2d" and has_general_geometry(op)}


@pytest.mark.parametrize("variant", ["mixed", "wide"])
def test_forward_is_bit_exact_with_the_simulation(variant):
    q = _model(variant)
    ex = Executor(compile_training(q, resolve(get_builtin("last-k:6", "tiny"), q.spec), lr=LR, seed=SEED))
    image = int8_images(q, 1)[0]
    ref, predicted = _simulated(q, image), {}
    ex.predict(image, record=predicted)
    general = {c.name for c in q.convs() if c.general_geometry}
    assert general <= set(predicted)  # general convs run whole: their outputs are all materialised
    compared = set(ref) & set(predicted)
    assert len(compared) >= 10
    for tensor in compared:
        assert np.array_equal(predicted[tensor], ref[tensor]), tensor
    assert len(np.unique(predicted["first_conv"])) > 20


@pytest.mark.parametrize("variant, scheme", [("mixed", "full"), ("mixed", "last-k:6"), ("wide", "full"),
                                             ("wide", "bias-only")])
def test_training_steps_match_the_simulation(variant, scheme):
    q = _model(variant)
    plan = resolve(get_builtin(scheme, "tiny"), q.spec)
    images, labels = int8_images(q, STEPS), np.arange(STEPS) % 4
    program = compile_training(q, plan, lr=LR, seed=SEED)
    d = differences(run_engine(Executor(program), images, labels),
                    simulate(q, plan, images, labels, lr=LR, seed=SEED), qmodel_params(q))
    trained = sum(int(np.prod(op.attr("kept_shape"))) for op in update_ops(program.graph))
    assert d["max_lsb"] <= 1 and d["bias_error"] <= 1 and d["differing_fraction"] <= 1e-3
    assert d["loss_rel_error"] <= 1e-5
    assert d["moved"] >= max(50, 0.01 * trained)


def test_fused_ops_hold_no_general_conv_and_zoo_ops_still_fuse():
    q = _model("mixed")
    program = compile_training(q, resolve(get_builtin("last-k:6", "tiny"), q.spec), lr=LR, seed=SEED,
                               row_fusion="max")
    graph = program.inference.graph
    general = {c.name for c in q.convs() if c.general_geometry}
    assert general == _general_op_names(graph)  # every one still a plain conv2d op
    fused = [op for op in graph.ops if op.kind in ("mbconv_rows", "pointwise_depthwise")]
    assert fused  # the zoo-geometry blocks (non-square activations) are still fused
    inside = {st.name for op in fused if op.kind == "mbconv_rows" for st in stages_of(op)}
    inside |= {op.name for op in fused if op.kind == "pointwise_depthwise"}
    assert not inside & general
    for op in program.train.graph.ops:
        if op.kind == "mbconv_grad":
            assert not any(has_general_geometry(p) for p in program_of(op).parts)


def _conv_op(kernel=(3, 3), geometry=None, groups=1) -> Op:
    geometry = geometry or dict(stride=1, pad=kernel[0] // 2)
    return Op("c", "conv2d", ("x", "w", "b", "m", "s"), ("y",), make_attrs(groups=groups, **geometry))


def test_each_fusing_pass_refuses_a_general_conv():
    zoo = _conv_op()
    general = _conv_op(geometry=dict(strides=(1, 1), pads=(0, 1, 0, 1)))
    same_s2 = _conv_op(geometry=dict(strides=(2, 2), pads=(0, 1, 0, 1)))  # TFLite SAME, stride 2, even input

    class _Shapes:  # the graph view row_fusable reads: x [1, 4, 8, 8], w [4, 4, 3, 3]
        @staticmethod
        def tensor(name):
            return type("T", (), {"shape": {"x": (1, 4, 8, 8), "w": (4, 4, 3, 3)}[name]})

    assert row_fusable(zoo, _Shapes) and not row_fusable(general, _Shapes)
    assert row_fusable(same_s2, _Shapes)  # the row geometry (ops.row_geometry): windows clipped at the bottom
    dw_zoo = _conv_op(groups=4)
    dw_general = _conv_op(geometry=dict(strides=(1, 2), pads=(1, 1, 1, 1)), groups=4)
    assert _is_depthwise_of(dw_zoo, "x") and not _is_depthwise_of(dw_general, "x")

    class _G:  # the graph view _is_plain_expand reads
        outputs = ()

        @staticmethod
        def tensor(name):
            return type("T", (), {"shape": (4, 4, 1, 1)})

    assert _is_plain_expand(_conv_op((1, 1), dict(stride=1, pad=0)), _G, set())
    assert not _is_plain_expand(_conv_op((1, 1), dict(strides=(1, 1), pads=(0, 1, 0, 0))), _G, set())
    graph = type("G", (), {"ops": (zoo, general)})
    assert block_fusable(graph, [0]) and not block_fusable(graph, [0, 1])


# Shape rules: ops.py's output type == the NumPy kernel's output == the simulation's, any geometry.
@st.composite
def _geometries(draw):
    (kh, kw), (sh, sw), pads, (h, w) = draw_window(draw, 11, 2, 16)
    groups = draw(st.sampled_from([1, 3]))
    return (kh, kw), (sh, sw), pads, (h, w), groups


class _Graph:
    def __init__(self, shapes):
        self.shapes = shapes

    def tensor(self, name):
        return type("T", (), {"shape": self.shapes[name]})


@settings(max_examples=60, deadline=None)
@given(_geometries())
def test_shape_rules_match_what_the_kernels_compute(geometry):
    kernel, strides, pads, (h, w), groups = geometry
    op = Op("c", "conv2d", ("x", "w", "b", "m", "s"), ("y",),
            make_attrs(groups=groups, strides=strides, pads=pads, x_zero=3, y_zero=0, qmin=-128, qmax=127))
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, 3, h, w)).astype(np.int8)
    weight = rng.integers(-127, 128, (3, 3 // groups) + kernel).astype(np.int8)
    graph = _Graph({"x": x.shape, "w": weight.shape})
    [(shape, dtype)] = OUTPUT_TYPES["conv2d"](graph, op)
    assert conv_geometry(op, kernel) == (strides, pads)
    (y,) = KERNELS["conv2d"](op, [x, weight, np.zeros(3, np.int32), np.full(3, 1 << 30, np.int32),
                                  np.full(3, -8, np.int32)], 0)
    sim = exact_conv(torch.from_numpy(x.astype(np.float32)) - 3, torch.from_numpy(weight.astype(np.float32)), strides,
                     groups, pads)
    assert y.shape == shape == tuple(sim.shape) and dtype == "int8"
    assert y.shape[2:] == ((h + pads[0] + pads[1] - kernel[0]) // strides[0] + 1,
                           (w + pads[2] + pads[3] - kernel[1]) // strides[1] + 1)


@settings(max_examples=60, deadline=None)
@given(_geometries())
def test_backward_kernels_are_the_simulations_vjps_for_any_geometry(geometry):
    """conv2d_grad_x crops/pads the transposed conv and conv2d_grad_w correlates as the simulation does."""
    kernel, strides, pads, (h, w), groups = geometry
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (1, 3, h, w)).astype(np.int8)
    weight = rng.integers(-127, 128, (3, 3 // groups) + kernel).astype(np.int8)
    ho = (h + pads[0] + pads[1] - kernel[0]) // strides[0] + 1
    wo = (w + pads[2] + pads[3] - kernel[1]) // strides[1] + 1
    g = rng.standard_normal((1, 3, ho, wo)).astype(np.float32)
    attrs = dict(groups=groups, strides=strides, pads=pads)
    gx_op = Op("gx", "conv2d_grad_x", ("g", "w"), ("gx",), make_attrs(input_shape=x.shape, **attrs))
    gw_op = Op("gw", "conv2d_grad_w", ("x", "g"), ("gw",),
               make_attrs(kept=3, weight_shape=weight.shape, x_zero=3, **attrs))
    graph = _Graph({"g": g.shape, "w": weight.shape, "x": x.shape})
    (gx,) = KERNELS["conv2d_grad_x"](gx_op, [g, weight], 0)
    (gw,) = KERNELS["conv2d_grad_w"](gw_op, [x, g], 0)
    assert gx.shape == OUTPUT_TYPES["conv2d_grad_x"](graph, gx_op)[0][0] == x.shape
    assert gw.shape == OUTPUT_TYPES["conv2d_grad_w"](graph, gw_op)[0][0]
    wt, gt = torch.from_numpy(weight.astype(np.float64)), torch.from_numpy(g.astype(np.float64))
    ref_x = input_grad(x.shape, wt, gt, strides, groups, pads)
    ref_w = partial_weight_grad(torch.from_numpy(x.astype(np.float64)) - 3, wt, gt, strides, groups, 3, pads)
    np.testing.assert_allclose(gx, ref_x.numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(gw, ref_w.numpy(), rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("row_fusion", ["auto", "max"])
def test_zoo_geometry_on_a_non_square_one_channel_input_fuses_and_stays_exact(row_fusion):
    """The fused paths (streamed image, row pipelines, pointwise-depthwise, block backwards) with
    height != width: bit-exact forward, training as the simulation."""
    q = _model("zoo_hw")
    assert not any(c.general_geometry for c in q.convs()) and q.input_size == (18, 30)
    plan = resolve(get_builtin("last-k:6", "tiny"), q.spec)
    program = compile_training(q, plan, lr=LR, seed=SEED, row_fusion=row_fusion)
    kinds = {op.kind for op in program.inference.graph.ops}
    assert "mbconv_rows" in kinds and "image" in program.inference.graph.streams
    assert any(op.kind == "mbconv_grad" for op in program.train.graph.ops)
    image = int8_images(q, 1)[0]
    ref, predicted = _simulated(q, image), {}
    Executor(program).predict(image, record=predicted)
    for tensor in set(ref) & set(predicted):
        assert np.array_equal(predicted[tensor], ref[tensor]), tensor
    images, labels = int8_images(q, STEPS), np.arange(STEPS) % 4
    d = differences(run_engine(Executor(program), images, labels),
                    simulate(q, plan, images, labels, lr=LR, seed=SEED), qmodel_params(q))
    assert d["max_lsb"] <= 1 and d["bias_error"] <= 1 and d["differing_fraction"] <= 1e-3
    assert d["loss_rel_error"] <= 1e-5 and d["moved"] >= 50


@pytest.mark.parametrize("variant", ["mixed", "wide"])
def test_both_learn_a_repeated_sample_alike(variant):
    """The same training outcome: on one repeated sample the engine's and the simulation's losses fall
    together, step by step."""
    q = _model(variant)
    plan = resolve(get_builtin("full", "tiny"), q.spec)
    images = np.repeat(int8_images(q, 1, seed=7), 8, axis=0)
    labels = np.ones(8, np.int64)
    engine = run_engine(Executor(compile_training(q, plan, lr=LR, seed=SEED)), images, labels)
    reference = simulate(q, plan, images, labels, lr=LR, seed=SEED)
    assert engine.losses[-1] < 0.75 * engine.losses[0]
    np.testing.assert_allclose(engine.losses, reference.losses, rtol=1e-5)
