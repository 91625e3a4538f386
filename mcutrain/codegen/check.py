"""The generated C next to the NumPy reference executor: equality figures and timings, side by side.

Why in the library: "the C program computes what the reference computes" is the code generator's
contract; tests, benchmarks and the CLI check it the same way.
  * ``side_by_side``: the same images and labels through ``HostEngine`` and ``Executor``, interleaved
    step by step (so machine load hits both alike): logits before and after training compared bit for
    bit, the training run compared with ``engine.executor.compare.differences`` (int8 weights within
    1 LSB on few elements, biases, loss relative error), and the median wall time of each call.
  * ``op_by_op``: one training step and one prediction with a trace build: every op output in the C
    arena right after the op against the executor's record (int8 / int32 and packed masks byte for
    byte, float32 to a relative 1e-5).
  * ``float_outputs``: the same traced step, the float32 outputs only, counted bit for bit: how many
    elements differ from the reference and by how much (float64 accumulators: none; float32
    accumulators: most, by float32 rounding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mcutrain.engine.ir import GRAD_DTYPES, GRAD_HEADER_BYTES

from mcutrain.codegen.host import HostEngine
from mcutrain.engine.executor import Executor
from mcutrain.engine.executor.compare import Trace, differences

__all__ = ["SideBySide", "float_outputs", "op_by_op", "side_by_side"]


@dataclass(frozen=True)
class SideBySide:
    differences: dict  # engine.executor.compare.differences(C run, NumPy run, initial parameters)
    logits_equal_before: bool  # predict, bit for bit, before training
    logits_equal_after: bool  # and after it
    c_train_ms: float  # median wall time of one call
    numpy_train_ms: float
    c_predict_ms: float
    numpy_predict_ms: float


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def side_by_side(program, lib_path, images: np.ndarray, labels: np.ndarray, probe: np.ndarray) -> SideBySide:
    """Train both executors on ``images``/``labels`` (interleaved), predicting ``probe`` before and after."""
    c, ref = HostEngine(lib_path), Executor(program)
    initial = ref.parameters()
    before = [np.array_equal(c.predict(x), ref.predict(x)) for x in probe]
    c_losses, ref_losses, times = [], [], {"ct": [], "nt": [], "cp": [], "np": []}
    for x, y in zip(images, labels):
        loss, t = _timed(c.train_step, x, int(y))
        c_losses.append(loss), times["ct"].append(t)
        loss, t = _timed(ref.train_step, x, int(y))
        ref_losses.append(loss), times["nt"].append(t)
    after = []
    for x in probe:
        a, t = _timed(c.predict, x)
        times["cp"].append(t)
        b, t = _timed(ref.predict, x)
        times["np"].append(t)
        after.append(np.array_equal(a, b))
    d = differences(Trace(tuple(c_losses), c.parameters()), Trace(tuple(ref_losses), ref.parameters()), initial)
    ms = {k: float(np.median(v)) * 1e3 if v else float("nan") for k, v in times.items()}
    return SideBySide(d, all(before), all(after), ms["ct"], ms["nt"], ms["cp"], ms["np"])


def _traced(program, trace_lib_path, image: np.ndarray, label: int) -> tuple[dict, tuple[dict, dict]]:
    """One training step and one prediction on both: ({(stage, tensor): C arena bytes right after the
    op that wrote it}, (the executor's training record, its inference record))."""
    engine, ref = HostEngine(trace_lib_path), Executor(program)
    stages = (program.train, program.inference)
    seen: dict[tuple[int, str], np.ndarray] = {}

    def hook(stage: int, index: int) -> None:
        s = stages[stage]
        arena = engine.arena()
        for name in s.graph.ops[index].outputs:
            at, size = s.offset(name), s.graph.tensor(name).nbytes
            seen[(stage, name)] = arena[at:at + size].copy()

    engine.set_trace(hook)
    recorded = ({}, {})
    engine.train_step(image, label)
    ref.train_step(image, label, record=recorded[0])
    engine.predict(image)
    ref.predict(image, record=recorded[1])
    engine.set_trace(None)
    return seen, recorded


def op_by_op(program, trace_lib_path, image: np.ndarray, label: int) -> dict[str, str]:
    """One training step and one prediction, compared after every op: tensor -> what differs
    (empty: every op output of both programs matches). Needs a library built with ``trace=True``."""
    stages = (program.train, program.inference)
    seen, recorded = _traced(program, trace_lib_path, image, label)
    problems = {}
    for stage, record in enumerate(recorded):
        for name, value in record.items():
            info = stages[stage].graph.tensor(name)
            got = seen.get((stage, name))
            if got is None:
                problems[name] = "never written by the C program"
                continue
            problem = _compare(info.dtype, got, value)
            if problem:
                problems[f"{('train', 'inference')[stage]}:{name}"] = problem
    return problems


def float_outputs(program, trace_lib_path, image: np.ndarray, label: int) -> dict:
    """The float32 op outputs of one training step (and a prediction) against the reference, bit for
    bit: {"tensors", "elements", "differing" (elements not bit-equal), "worst_relative" (largest
    |difference| over the tensor's largest |value|)}. Needs a library built with ``trace=True``."""
    stages = (program.train, program.inference)
    seen, recorded = _traced(program, trace_lib_path, image, label)
    out = {"tensors": 0, "elements": 0, "differing": 0, "worst_relative": 0.0}
    for stage, record in enumerate(recorded):
        for name, value in record.items():
            if stages[stage].graph.tensor(name).dtype != "float32" or (stage, name) not in seen:
                continue
            actual = seen[(stage, name)].view(np.float32).reshape(value.shape)
            scale = max(float(np.abs(value).max(initial=0)), 1e-30)
            out["tensors"] += 1
            out["elements"] += value.size
            out["differing"] += int(np.count_nonzero(actual != value))
            worst = float(np.abs(actual.astype(np.float64) - value).max(initial=0)) / scale
            out["worst_relative"] = max(out["worst_relative"], worst)
    return out


def _compare(dtype: str, got: np.ndarray, value) -> str:
    if dtype in GRAD_DTYPES:  # [int32 exponent][payload] against the reference's GradTensor: bit for bit
        exponent = int(got[:GRAD_HEADER_BYTES].view(np.int32)[0])
        payload = got[GRAD_HEADER_BYTES:].view(np.dtype(GRAD_DTYPES[dtype])).reshape(value.g.shape)
        if exponent != value.e:
            return f"exponent {exponent}, the reference's {value.e}"
        return "" if np.array_equal(payload, value.g) else f"{np.count_nonzero(payload != value.g)} elements differ"
    if dtype == "bit":
        expected = np.packbits(np.asarray(value, bool).ravel(), bitorder="little")
        return "" if np.array_equal(got, expected) else "mask bytes differ"
    actual = got.view(np.dtype(dtype)).reshape(value.shape)
    if dtype != "float32":
        return "" if np.array_equal(actual, value) else f"{np.count_nonzero(actual != value)} elements differ"
    scale = max(float(np.abs(value).max(initial=0)), 1e-30)
    worst = float(np.abs(actual.astype(np.float64) - value).max(initial=0)) / scale
    return "" if worst <= 1e-5 else f"float32 relative error {worst:.3g}"
