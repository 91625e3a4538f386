"""Learning rates nobody has to tune: one derived from the model and the data, and ``--lr auto``.

Why a derived rate. With QAS an int8 step equals the fp32 step (DESIGN.md section 4), so the question
is the fp32 one: which rate is safe for SGD on these features? Transfer learning trains a new linear
head on the backbone's pooled features x (plus a few backbone layers). The cross-entropy's curvature
along the worst direction of the head is h * lambda_max(E[x x^T]) (h <= 1/2 is softmax's curvature in
the logits), and SGD with heavy-ball momentum mu diverges once lr > 2 (1 + mu) / (h * lambda_max). No
fixed rate serves every backbone: at 64x64 lambda_max is 450 (mbv2-w0.35 from ImageNet), 1,300
(proxyless-w0.3), 3,200 (mcunet-5fps) and 13 (the bundled fashion-MNIST backbone), so the old default
0.05 diverged on all three ImageNet models while 1e-3 crawls on the bundled one. The derived rate is a
fixed fraction of that limit (the constants are calibrated by the sweep in docs/results/lr_sweep.md):

    lr = DERIVED_FRACTION * (1 + mu) / lambda_max        (mini-batch SGD, the simulation)
    lr = DEVICE_FRACTION / lambda_max                    (batch 1, plain SGD: the C engine)

snapped to a quarter-octave grid (2^(k/4)) so that the last bits of lambda_max, which depend on the
CPU's float kernels, cannot reach the rate (README: the same results on every machine). lambda_max is
measured on HEAD_SAMPLES seeded training samples in float64 from the int8 features (exact integers).
Adam normalises its steps, so its rate does not scale with the features: ADAM_RATE (fp32 convention).

``--lr auto`` refines the derived rate on the validation split: a few short seeded runs at
``AUTO_FACTORS`` times the derived rate, each ``probe_steps`` optimizer steps long, keep the best
validation accuracy (ties: the lower rate). It costs ``len(AUTO_FACTORS) * probe_steps`` steps on top
of the run (about a third of a default 10-epoch run; less for longer runs) and reuses the run's
frozen-prefix cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mcutrain.data import ImageSet, Preprocessing
from mcutrain.data.loader import BatchLoader
from mcutrain.quant.qmodel import QModel
from mcutrain.quant.sim_model import Int8Net

AUTO = "auto"
HEAD_SAMPLES = 256
DERIVED_FRACTION = 1.3  # calibrated: docs/results/lr_sweep.md
DEVICE_FRACTION = 0.25  # calibrated: docs/results/lr_sweep.md
ADAM_RATE = 1e-3
AUTO_FACTORS = (0.25, 0.5, 1.0, 2.0)
PROBE_STEPS = (10, 30)  # each candidate trains for a tenth of the run, within these bounds


@dataclass(frozen=True)
class HeadCurvature:
    """lambda_max of E[x x^T] for the head's input x (dequantized pooled features) on ``samples``."""

    lambda_max: float
    samples: int


def is_auto(lr) -> bool:
    return isinstance(lr, str) and lr == AUTO


@torch.no_grad()
def head_curvature(qmodel: QModel, train: ImageSet, resolution: int, prep: Preprocessing, seed: int) -> HeadCurvature:
    """The head-input second moment's largest eigenvalue, on a seeded subset of the training split."""
    net = Int8Net(qmodel).eval()
    subset = train.subset(HEAD_SAMPLES, seed + 7)
    loader = BatchLoader(subset, 64, resolution, shuffle=False, preprocessing=prep)
    zero, scale = qmodel.classifier.x.zero, qmodel.classifier.x.scale
    # The pooled features are int8 integers: their sums of products are exact in float64, so the
    # moment matrix is the same on every CPU; only the eigen-solver's last bits may differ.
    sums = sum(_gram(net.features(net.quantize_input(x)).double() - zero) for x, _ in loader)
    moment = sums * (scale * scale) / len(subset)
    return HeadCurvature(float(np.linalg.eigvalsh(moment)[-1]), len(subset))


def _gram(x: torch.Tensor) -> np.ndarray:
    x = x.numpy()
    return x.T @ x


def derived_lr(curvature: HeadCurvature, *, optimizer: str = "sgd", momentum: float = 0.9) -> float:
    """The mini-batch rate of the module docstring (the simulation's ``finetune`` and ``analyze``)."""
    if optimizer == "adam":
        return ADAM_RATE
    return snap(DERIVED_FRACTION * (1.0 + momentum) / max(curvature.lambda_max, 1e-12))


def device_lr(curvature: HeadCurvature) -> float:
    """The batch-1 plain-SGD rate for the C engine (``compile``, ``demo``)."""
    return snap(DEVICE_FRACTION / max(curvature.lambda_max, 1e-12))


def snap(lr: float) -> float:
    """``lr`` rounded to the nearest 2^(k/4), within [2^-60, 2^60]: steps of 19%, far below what
    matters for a learning rate, and far above the last-bit differences between CPUs."""
    k = round(4 * math.log2(min(max(lr, 2.0 ** -60), 2.0 ** 60)))
    return float(2.0 ** (k / 4))


def probe_steps(run_steps: int) -> int:
    """Optimizer steps of each ``--lr auto`` candidate: a tenth of the run, within PROBE_STEPS."""
    low, high = PROBE_STEPS
    return max(low, min(high, run_steps // 10))


@dataclass(frozen=True)
class LrChoice:
    """What ``--lr auto`` tried and chose; recorded in the output's metadata and ``--json``."""

    lr: float
    derived: float
    curvature: HeadCurvature
    probe_steps: int
    candidates: tuple[tuple[float, float], ...]  # (lr, validation accuracy after the probe)
    seconds: float

    def as_dict(self) -> dict:
        return {"lr": self.lr, "derived_lr": self.derived, "head_lambda_max": self.curvature.lambda_max,
                "head_samples": self.curvature.samples,
                "probe_steps": self.probe_steps, "seconds": round(self.seconds, 2),
                "candidates": [{"lr": lr, "val_accuracy": acc} for lr, acc in self.candidates]}

    def summary(self) -> str:
        tried = ", ".join(f"{lr:.2g}: {acc * 100:.1f}%" for lr, acc in self.candidates)
        return (f"--lr auto chose {self.lr:.3g} (derived {self.derived:.3g} from the head's curvature "
                f"{self.curvature.lambda_max:.3g}; validation accuracy after {self.probe_steps} steps: {tried}; "
                f"{self.seconds:.1f} s)")


def choose_lr(derived: float, steps: int, probe, *, curvature: HeadCurvature, clock) -> LrChoice:
    """Run ``probe(lr, steps) -> validation accuracy`` at each factor of ``derived``; keep the best
    (ties: the lower rate, the safer one for a run longer than the probe)."""
    t0 = clock()
    candidates = tuple((snap(derived * f), float(probe(snap(derived * f), steps))) for f in AUTO_FACTORS)
    best = max(candidates, key=lambda c: (c[1], -c[0]))
    return LrChoice(best[0], derived, curvature, steps, candidates, clock() - t0)


# The C engine's rate when nothing tells us the features' scale (no --data, nothing recorded): the
# old default. Too large a rate is caught on the device: the engine's guard rolls back and halves it.
FALLBACK_DEVICE_LR = 0.01


def model_head_curvature(qmodel: QModel, train: ImageSet, seed: int) -> HeadCurvature:
    """``head_curvature`` at the model's own resolution and preprocessing."""
    return head_curvature(qmodel, train, qmodel.resolution, Preprocessing.from_dict(qmodel.preprocessing), seed)


def recorded_curvature(qmodel: QModel) -> HeadCurvature | None:
    """The head curvature a ``finetune --lr auto`` recorded in the model file, if any."""
    auto = qmodel.provenance.get("finetune", {}).get("lr_auto", {})
    value = auto.get("head_lambda_max") if isinstance(auto, dict) else None
    if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
        return HeadCurvature(float(value), int(auto.get("head_samples", 0) or 0))
    return None
