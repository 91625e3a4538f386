"""``--backward int8``: the PyTorch simulation at batch 1 equals the NumPy executor bit for bit.

The third leg of "every executor bit-exact" (the C equals the NumPy executor in
tests/codegen/test_codegen_int8_backward.py): the simulation's autograd functions and the engine's
compiled int8 kernels are separate implementations of quant/int8_grad.py, so after every step every
int8 weight and int32 bias must be identical, with no tolerance, for sparse and full schemes, depthwise
and residual blocks included, and the run must really train.
"""

from __future__ import annotations

import numpy as np
import pytest

from mcutrain.engine.executor.compare import engine_steps, qmodel_params, train_one_by_one
from mcutrain.quant.random_model import random_qmodel
from mcutrain.quant.sim_model import Int8Net
from mcutrain.sparse import get_builtin, resolve

LR, SEED, CLASSES, RES, STEPS = 0.2, 7, 4, 32, 6


@pytest.mark.parametrize("scheme", ["last-k:6", "full", "bias-only"])
def test_simulation_equals_the_engine_after_every_step(scheme):
    q = random_qmodel("tiny", RES, CLASSES, seed=2)[0]
    plan = resolve(get_builtin(scheme, "tiny"), q.spec)
    rng = np.random.default_rng(3)
    images = rng.integers(-128, 128, (STEPS, 3, RES, RES)).astype(np.int8)
    labels = rng.integers(0, CLASSES, STEPS)
    engine = engine_steps(q, plan, images, labels, lr=LR, seed=SEED)
    simulated = []
    train_one_by_one(Int8Net(q), plan, images, labels, lr=LR, seed=SEED, backward="int8",
                     after_each=lambda net: simulated.append(qmodel_params(net.to_qmodel())))
    start = qmodel_params(q)
    for step, (sim, eng) in enumerate(zip(simulated, engine)):
        for name in sim:
            assert np.array_equal(sim[name], eng[name]), (scheme, step, name)
    moved = sum(int(np.count_nonzero(engine[-1][n] != start[n])) for n in start)
    assert moved >= 20, moved


def test_both_executors_start_from_the_same_integer_factors():
    """Every real factor enters both as grad_multiplier of the float path's float32 constant (int8_grad's
    definition): the simulation's (m, sh) per conv and add equal the compiled program's constants, over
    models whose many channels make a double-rounding difference likely if one side skipped the float32."""
    from mcutrain.engine.compile import compile_training

    for seed in range(3):
        q = random_qmodel("mcunet-5fps", 64, 10, seed=seed)[0]
        program = compile_training(q, resolve(get_builtin("full", "mcunet-5fps"), q.spec), lr=LR, seed=SEED,
                                   backward="int8")
        constants = program.train.graph.constants
        net = Int8Net(q)
        checked = 0
        for conv in net.convs():
            name = f"{conv.q.name}.real_multiplier.grad8"
            if name in constants:
                assert np.array_equal(np.stack(conv.grad_factor), constants[name]), name
                checked += 1
        for name, module in net.named_modules():
            key = f"{name.removeprefix('features.')}.ratios.grad8"
            if hasattr(module, "grad_factor_a") and key in constants:
                pair = np.stack([np.concatenate(f) for f in zip(module.grad_factor_a, module.grad_factor_b)])
                assert np.array_equal(pair, constants[key]), key
                checked += 1
        assert checked >= 40, checked
