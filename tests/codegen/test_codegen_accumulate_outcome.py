"""The default float32 backward trains like the reference: 1000 steps of one sample stream (issue 15, item 3).

Why this test: float32 accumulators are the default (DESIGN.md section 3), so the C no longer equals
the NumPy reference executor bit for bit; the issue asks for a stated tolerance AND equal training
outcomes. The task: the digits model (``tiny`` @16, pretrained on digits, int8; tests/helpers) with a
new zero head, so it starts at chance (10 classes) and must learn; scheme ``full`` (every layer's
backward runs: the block backwards, ``mbconv_grad``, included), lr 0.01, stochastic-rounding seed 0,
1000 batch-1 steps over digits' train split, evaluated on its val + test splits (538 held-out images:
0.2 point is one image).

The reference over 1000 steps is the float64 (audit) host build: 1000 steps of the NumPy executor take
minutes (~0.25 s a step here). The float64 build equals the NumPy executor: one traced step float for
float (``test_codegen_accumulate.py::test_one_step_op_by_op_forward_exact_gradients_within_float32_rounding``,
0 differing elements), training steps parameter for parameter (``test_codegen_host_fc.py``,
``test_codegen_host_graph_ops.py``: max_lsb 0, bias_error 0), and, here, the first ``DIRECT`` steps of
this very stream (losses and parameters identical), where the float32 build is also checked against the
NumPy executor directly.

Criteria (the issue's) and what was measured (2026-12-06, x86-64 host, gcc -O2):
  * accuracy of both within 0.2 point: 88.85% and 88.85% (chance: 10%; before training 10.0%);
  * int8 weights: at most 0.1% 1 LSB apart and none more: 0 of 4,960 differ;
  * int32 biases: every one within 1 LSB: 1 of 274 is 1 LSB apart (blocks.4.pointwise2, a channel
    whose bias moved 1.45 M LSB);
  * losses: bit-equal at all 1000 steps (asserted within 1e-5 relative, as the other equality tests).

Where this can break, measured, and why (not hidden): over 1000 steps the two builds stay together only
while no rounding decision flips. The float32 and float64 sums differ by float32 rounding (~1e-7
relative); a bias update is thousands to millions of LSB for small-scale channels, so its rounded
value sometimes lands 1 LSB apart. That bias is carried along (identical updates after it) until an
int32 accumulator it feeds sits exactly on a requantization boundary: then one int8 activation flips,
the loss and every gradient differ, and from that step on the runs are two different stochastic-
rounding trajectories (batch-1 int8 SGD does not pull them back together). Measured with seeds 0-11
of this setup (same model, stream, lr; seed 0 was the only one tried before): 7 (0, 2-5, 10, 11)
stayed together over the 1000 steps (weights identical, at most 3 biases 1 LSB apart, accuracy
equal); 5 diverged (seed: first step with a bias 1 LSB apart where traced, first step with the
losses apart, final accuracy float32 / float64): 1: 569, 726, 92.2 / 86.3%; 6: -, 505, 87.7 / 88.7%;
7: -, 648, 90.7 / 92.8%; 8: 62, 124, 90.7 / 89.6%; 9: 158, 221, 89.4 / 88.9%; 61-74% of the weights
apart at the end. Over the 12 seeds the outcomes agree as distributions: mean accuracy 90.2%
(float32) and 89.8% (float64), each with a seed-to-seed standard deviation of 2.2-2.4 points
(85.9-93.3%). So the issue's per-run
criterion (0.2 point, 0.1% of weights) holds only while the two runs stay identical in their
integers, and a kernel change that reorders the float32 sums (e.g. blocked contractions) reshuffles
which seeds diverge. If this test fails that way (the printed first step with differing losses), it
is this effect, not a bug: the direct checks here and the one-step / few-step tests above locate real
ones. What would make it hold for every seed: one float32 summation order that the NumPy reference
follows too (bit-exact, the issue's first choice), or bias updates whose rounding does not depend on
the accumulation order.

The PyTorch simulation: ``tests/engine/test_engine_equivalence.py::test_training_steps_match_the_simulation``
holds the NumPy executor to the simulation (5 steps: int8 weights within 1 LSB on <= 0.1%, biases, loss
within 1e-5). Over this test's 1000 steps (seed 0) the simulation and the float64 build (standing for
the NumPy executor) diverge the same way: identical parameters up to step 155, a 1-LSB bias from then on, first weights
apart and losses 1e-2 apart at step 533, at the end 68% of weights apart and accuracy 93.5%
(simulation) against 88.8%; 1000 simulation steps take ~90 s, too slow for the suite.
"""

from __future__ import annotations

import numpy as np
import pytest

from mcutrain.codegen import HostEngine, build_host, compile_for_codegen, generate
from mcutrain.codegen.samples import int8_samples
from mcutrain.data import ImageSet, load_dataset
from mcutrain.engine.executor import Executor
from mcutrain.engine.executor.compare import Trace, differences
from mcutrain.quant.head import new_head
from mcutrain.quant.model_file import load_qmodel
from mcutrain.sparse import get_builtin, resolve
from tests.helpers.digits_model import make_digits_models

STEPS, DIRECT, LR, SEED = 1000, 12, 0.01, 0
CHANCE = 0.1  # 10 classes, balanced


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(program, training stream, held-out set): the fresh-head digits model compiled for C."""
    q = load_qmodel(make_digits_models(tmp_path_factory.mktemp("digits"))[1])
    q = new_head(q, q.classes)
    plan = resolve(get_builtin("full", q.spec.name), q.spec)
    program = compile_for_codegen(q, plan, lr=LR, seed=SEED)
    data = load_dataset("digits", seed=0)
    draw = dict(resolution=q.resolution, preprocessing=q.preprocessing, input_scale=q.input.scale,
                input_zero=q.input.zero)
    held = ImageSet(np.concatenate([data.val.images, data.test.images]),
                    np.concatenate([data.val.labels, data.test.labels]))
    train = int8_samples(data.train, STEPS, seed=0, **draw)
    held_out = int8_samples(held, len(held), seed=1, **draw)  # every held-out image once
    return program, train, held_out


def _engine(program, folder, accumulate: str) -> HostEngine:
    generate(program, folder, accumulate=accumulate)
    engine = HostEngine(build_host(folder))
    assert engine.accumulate == accumulate
    return engine


def _accuracy(engine: HostEngine, held_out) -> float:
    images, labels = held_out
    return float(np.mean(engine.predict_classes(images) == labels))


def _weights_apart(a: dict, b: dict) -> tuple[int, int, int]:
    """(int8 weight elements that differ, all of them, the largest difference in LSB)."""
    keys = [k for k in b if k.endswith(".weight")]
    diffs = [np.abs(a[k].astype(np.int64) - b[k].astype(np.int64)) for k in keys]
    return (sum(int(np.count_nonzero(d)) for d in diffs), sum(d.size for d in diffs),
            max(int(d.max(initial=0)) for d in diffs))


def _biases_apart(a: dict, b: dict) -> tuple[int, int]:
    """(int32 bias elements that differ, the largest difference in LSB)."""
    diffs = [np.abs(a[k].astype(np.int64) - b[k].astype(np.int64)) for k in b if k.endswith(".bias")]
    return sum(int(np.count_nonzero(d)) for d in diffs), max(int(d.max(initial=0)) for d in diffs)


def test_1000_float32_steps_give_the_references_training_outcome(tmp_path, setup):
    program, (images, labels), held_out = setup
    engines = {mode: _engine(program, tmp_path / mode, mode) for mode in ("float32", "float64")}
    reference = Executor(program)
    initial = reference.parameters()
    before = _accuracy(engines["float32"], held_out)
    losses = {mode: [] for mode in engines}
    numpy_losses = []
    for step, (x, y) in enumerate(zip(images, labels)):
        for mode, engine in engines.items():
            losses[mode].append(engine.train_step(x, int(y)))
        if step < DIRECT:
            numpy_losses.append(reference.train_step(x, int(y)))
        if step == DIRECT - 1:  # the direct checks against the NumPy executor, on this stream's first steps
            numpy_trace = Trace(tuple(numpy_losses), reference.parameters())
            audit = engines["float64"].parameters()
            assert losses["float64"] == numpy_losses  # the audit build IS the reference: bit for bit
            assert all(np.array_equal(audit[k], v) for k, v in numpy_trace.params.items())
            direct = differences(Trace(tuple(losses["float32"]), engines["float32"].parameters()), numpy_trace,
                                 initial)
            print(f"float32 C vs NumPy after {DIRECT} steps: {direct}")
            assert direct["max_lsb"] <= 1 and direct["bias_error"] <= 1 and direct["loss_rel_error"] <= 1e-5
            assert direct["moved"] >= 100  # they trained
    after = {mode: _accuracy(engine, held_out) for mode, engine in engines.items()}
    params = {mode: engine.parameters() for mode, engine in engines.items()}
    l32, l64 = np.asarray(losses["float32"]), np.asarray(losses["float64"])
    apart = np.flatnonzero(l32 != l64)
    weights, total, max_lsb = _weights_apart(params["float32"], params["float64"])
    biases, bias_lsb = _biases_apart(params["float32"], params["float64"])
    d = differences(Trace(tuple(l32), params["float32"]), Trace(tuple(l64), params["float64"]), initial)
    print(f"{STEPS} steps, {len(held_out[1])} held out: accuracy {before:.4f} -> float32 {after['float32']:.4f}, "
          f"float64 {after['float64']:.4f}; weights apart {weights}/{total} (max {max_lsb} LSB), biases apart "
          f"{biases} (max {bias_lsb} LSB); first step with differing losses: "
          f"{int(apart[0]) if apart.size else None}; {d}")
    assert len(held_out[1]) >= 500 and before <= CHANCE + 0.05  # a zero head: chance before training
    assert min(after.values()) >= 0.6  # it learned (measured 88.85%)
    assert abs(after["float32"] - after["float64"]) <= 0.002 + 1e-12  # the 0.2 point
    assert max_lsb <= 1 and weights <= 1e-3 * total  # the issue's: <= 0.1% of int8 weights 1 LSB apart
    # Every int32 bias within the equality tests' bias tolerance: 1 LSB, or 1e-5 of how far the reference
    # moved it (``differences``' bias_error <= 1). Measured: 1 bias 1 LSB apart (AMD EPYC, AVX2); on an
    # AVX-512 Xeon, whose float kernels pretrain a slightly different digits model, 1 bias 2 LSB apart on
    # a move of millions of LSB (bias_error 0.048), losses still bit-equal at every step.
    assert d["bias_error"] <= 1
    assert d["loss_rel_error"] <= 1e-5  # (measured: bit-equal at every step)
    assert d["moved"] >= 0.5 * d["elements"]  # 1000 steps moved most parameters: the comparison is not trivial
