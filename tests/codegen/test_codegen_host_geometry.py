"""The host build of the generated C with general conv geometry (issue 13): kh x kw kernels, per-axis
strides, asymmetric padding, non-square 1- and 3-channel inputs. Forward logits bit for bit with the
NumPy executor (itself bit-exact with the simulation, tests/engine/test_engine_geometry.py), training
within the tolerance of test_codegen_host_tiny, and every op's output equal op by op."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from mcutrain.codegen import build_host, compile_for_codegen, generate
from mcutrain.codegen.check import op_by_op, side_by_side
from mcutrain.codegen.host import build
from mcutrain.engine.ops import has_general_geometry
from mcutrain.sparse import get_builtin, resolve
from tests.helpers.geometry import general_qmodel, int8_images

LR, SEED, STEPS = 0.1, 11, 4


@lru_cache(maxsize=None)
def _program(variant: str, scheme: str):
    q = general_qmodel(variant)
    return compile_for_codegen(q, resolve(get_builtin(scheme, "tiny"), q.spec), lr=LR, seed=SEED)


@pytest.mark.parametrize("variant, scheme", [("mixed", "full"), ("wide", "full"), ("mixed", "last-k:6"),
                                             ("zoo_hw", "last-k:6")])
def test_training_steps_match_the_numpy_executor(tmp_path, variant, scheme):
    """zoo_hw: the fused C kernels (row pipelines, block backwards) on a non-square 1-channel input."""
    program = _program(variant, scheme)
    general = any(op.kind == "conv2d" and has_general_geometry(op) for op in program.train.graph.ops)
    fused = any(op.kind in ("mbconv_rows", "mbconv_grad") for op in program.train.graph.ops)
    assert general if variant != "zoo_hw" else fused
    generate(program, tmp_path)
    q = general_qmodel(variant)
    images, labels = int8_images(q, STEPS), np.arange(STEPS) % 4
    r = side_by_side(program, build_host(tmp_path), images, labels, images[:2])
    d = r.differences
    assert r.logits_equal_before and r.logits_equal_after
    assert d["max_lsb"] <= 1 and d["bias_error"] <= 1 and d["differing_fraction"] <= 1e-3
    assert d["loss_rel_error"] <= 1e-5
    assert d["moved"] >= 50


@pytest.mark.parametrize("variant, scheme", [("mixed", "full"), ("wide", "full"), ("zoo_hw", "last-k:6")])
def test_every_op_output_matches_the_numpy_executor(tmp_path, variant, scheme):
    program = _program(variant, scheme)
    generate(program, tmp_path)
    image = int8_images(general_qmodel(variant), 1, seed=9)[0]
    assert op_by_op(program, build(tmp_path, trace=True), image, 2) == {}
