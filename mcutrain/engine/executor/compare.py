"""Side-by-side runs of the compiled engine and the PyTorch simulation, and how far apart they end.

Why in the library: "the engine computes what the simulation computes" is the engine's contract; the
tests, benchmarks and anyone porting a model check it the same way. The simulation side is exactly
``Int8Net`` + ``Int8Optimizer(kind="sgd", momentum=0, qas=True, rule="sr")`` at batch 1, the step
the engine compiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mcutrain.engine.executor import Executor
from mcutrain.quant.qmodel import QModel
from mcutrain.quant.sim_model import Int8Net
from mcutrain.sparse import UpdatePlan
from mcutrain.train.int8_optim import Int8Optimizer


@dataclass(frozen=True)
class Trace:
    """Losses of each step and every parameter after the last one."""

    losses: tuple[float, ...]
    params: dict[str, np.ndarray]


def qmodel_params(q: QModel) -> dict[str, np.ndarray]:
    """A QModel's integers under the engine's parameter names (``{conv}.weight``, ``classifier.bias``)."""
    params = {}
    for conv in q.convs():
        params[f"{conv.name}.weight"], params[f"{conv.name}.bias"] = conv.weight, conv.bias
    params["classifier.weight"], params["classifier.bias"] = q.classifier.weight, q.classifier.bias
    return params


def simulate(qmodel: QModel, plan: UpdatePlan, images: np.ndarray, labels: np.ndarray, *, lr: float,
             seed: int, backward: str = "float32") -> Trace:
    """Train the simulation one image at a time (int8 images [N, 3, R, R]); the reference trace."""
    net = Int8Net(qmodel)
    losses = train_one_by_one(net, plan, images, labels, lr=lr, seed=seed, backward=backward)
    return Trace(losses, qmodel_params(net.to_qmodel()))


def train_one_by_one(net, plan: UpdatePlan, images: np.ndarray, labels: np.ndarray, *, lr: float,
                     seed: int, backward: str = "float32", after_each=None) -> tuple[float, ...]:
    """Plain SGD with QAS at batch 1 on a simulation (``Int8Net`` or ``GraphNet``), in place: the losses.

    ``backward``: "float32" or "int8" (the integer backward, from the engine's own loss gradient);
    ``after_each(net)``: called after every step (a step-by-step comparison's hook)."""
    from mcutrain.quant.sim_int8_backward import int8_cross_entropy

    net.set_trainable(plan)
    if backward != "float32":
        net.set_backward(backward)
    opt = Int8Optimizer(net, kind="sgd", lr=lr, momentum=0.0, qas=True, rule="sr", seed=seed, backward=backward)
    loss_fn = int8_cross_entropy if backward == "int8" else F.cross_entropy
    losses = []
    for image, label in zip(images, labels):
        opt.zero_grad()
        logits = net.classifier(net.features(torch.from_numpy(image[None].astype(np.float32))))
        loss = loss_fn(logits, torch.tensor([int(label)]))
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if after_each is not None:
            after_each(net)
    return tuple(losses)


def run_engine(executor: Executor, images: np.ndarray, labels: np.ndarray) -> Trace:
    """The same steps on the engine."""
    losses = tuple(executor.train_step(image, int(label)) for image, label in zip(images, labels))
    return Trace(losses, executor.parameters())


def engine_steps(qmodel, plan: UpdatePlan, images: np.ndarray, labels: np.ndarray, *, lr: float, seed: int,
                 backward: str = "int8") -> list[dict[str, np.ndarray]]:
    """Every parameter after each step of the NumPy executor (batch 1, one image per step), compiled
    from ``qmodel`` (a QModel or QGraph) and ``plan`` with ``backward``: the hook a cross-check with
    the simulation's int8 mode compares step by step (``qmodel_params`` names the same parameters)."""
    from mcutrain.engine.compile import compile_training

    executor = Executor(compile_training(qmodel, plan, lr=lr, seed=seed, backward=backward))
    after = []
    for image, label in zip(images, labels):
        executor.train_step(image, int(label))
        after.append(executor.parameters())
    return after


def differences(engine: Trace, reference: Trace, initial: dict[str, np.ndarray]) -> dict:
    """How far the engine's run is from the reference, and how much training moved the parameters.

    max_lsb: largest |difference| of an int8 weight; differing_fraction: share of all parameter
    elements (weights and biases) that differ; bias_error: largest |difference| of an int32 bias in
    units of max(1 LSB, 1e-5 of how far the reference moved it): <= 1 means every bias is within one
    LSB or within 1e-5 relative of its update (a bias update can be millions of LSB for a channel with
    a tiny scale, where float32 arithmetic is only good to ~1e-7 relative); loss_rel_error: worst
    relative loss error over the steps; moved: elements the reference changed (so a test can tell
    that the comparison is not trivially equal).
    """
    total = differing = moved = 0
    max_lsb, bias_error = 0, 0.0
    for name, ref in reference.params.items():
        ref64, start = ref.astype(np.int64), initial[name].astype(np.int64)
        diff = np.abs(engine.params[name].astype(np.int64) - ref64)
        if name.endswith(".weight"):
            max_lsb = max(max_lsb, int(diff.max(initial=0)))
        else:
            allowed = np.maximum(1.0, 1e-5 * np.abs(ref64 - start))
            bias_error = max(bias_error, float((diff / allowed).max(initial=0)))
        differing += int(np.count_nonzero(diff))
        moved += int(np.count_nonzero(ref64 != start))
        total += diff.size
    rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(engine.losses, reference.losses, strict=True)]
    return {"max_lsb": max_lsb, "differing_fraction": differing / total, "bias_error": bias_error,
            "loss_rel_error": max(rel), "moved": moved, "elements": total}
