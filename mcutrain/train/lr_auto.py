"""Learning rates nobody has to tune: one derived from the model and the data, and ``--lr auto``.

Why a derived rate. With QAS an int8 step equals the fp32 step (DESIGN.md section 4), so the question
is the fp32 one: which rate is safe for SGD on these features? Transfer learning trains a new linear
head on the backbone's pooled features x (plus a few backbone layers). The cross-entropy's curvature
along the worst direction of the head is h * lambda_max(E[x x^T]) (h <= 1/2 is softmax's curvature in
the logits), and SGD with heavy-ball momentum mu diverges once lr > 2 (1 + mu) / (h * lambda_max). No
fixed rate serves every backbone: at 64x64 lambda_max is 450 (mbv2-w0.35 from ImageNet), 1,300
(proxyless-w0.3), 3,200 (mcunet-5fps) and 13 (the bundled fashion-MNIST backbone), so the old default
0.05 diverged on all three ImageNet models while 1e-3 crawls on the bundled one. The derived rate is a
fixed fraction of that limit, the middle of the best rates measured on imported networks
(docs/results/lr_sweep.md; h ~ 1/K at a new head makes the limit about 13 / lambda_max at mu = 0.9):

    lr = DERIVED_FRACTION * (1 + mu) / lambda_max     (SGD with heavy-ball momentum mu)

snapped to a quarter-octave grid (2^(k/4)) so that the last bits of lambda_max, which depend on the
CPU's float kernels, cannot reach the rate (README: the same results on every machine). lambda_max is
measured on HEAD_SAMPLES seeded training samples in float64 from the int8 features (exact integers).
Adam normalises its steps, so its rate does not scale with the features: ADAM_RATE (fp32 convention).

``--lr auto`` refines the derived rate on the validation split by a line search over octaves
(``choose_lr``): short seeded runs of PROBE_STEPS optimizer steps at 1x and 2x the derived rate, then
on upwards (to 4x) or downwards (to 1/64x) while the validation accuracy improves. The best rate at
64x64 spans lr * lambda_max = 1.2 (mbv2-w0.35) to 15 (mcunet-5fps on digits): the curvature of the
head is not the only one that matters (the bundled backbone's deep layers want 1/40 of its head's
rate), and only a run can tell. 30-step probes ranked the rates as the full runs did where 10-step
probes preferred rates that diverged later.

The C engine trains at batch 1 without momentum; its rate is the mini-batch choice scaled by the
linear scaling rule (``per_sample_lr``: the same distance per sample; lr / ((1 - mu) * batch)), times
ENGINE_HEADROOM = 2 unless the probe at twice the choice failed (``engine_lr``, measured). ``--lr auto`` costs 3 or 4 probes
(90-120 steps and as many validation passes) on top of the run when the derived rate is near right,
up to 8 when it is far too large; the probes share the run's frozen-prefix cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mcutrain.data import ImageSet, Preprocessing
from mcutrain.data.loader import BatchLoader
from mcutrain.quant.qmodel import QModel

AUTO = "auto"
HEAD_SAMPLES = 256
DERIVED_FRACTION = 1.3  # lr * lambda_max = 2.5 at mu = 0.9: a fifth of the limit (docs/learning-rate.md)
ADAM_RATE = 1e-3
AUTO_UP, AUTO_DOWN = 2, -6  # --lr auto searches 1/64 .. 4 times the derived rate (octaves)
PROBE_STEPS = 30  # optimizer steps of each --lr auto probe (10 steps misjudged; docs/learning-rate.md)
PROBE_SAMPLES = 300  # ... and at least this many samples (batch 1: 300 steps)
DEVICE_PROBE_TRAIN, DEVICE_PROBE_EVAL = 1000, 500  # samples the device rate's search trains / is judged on


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
    from mcutrain.train.model_kind import simulation  # a zoo model or an imported graph

    net = simulation(qmodel).eval()
    subset = train.subset(HEAD_SAMPLES, seed + 7)
    loader = BatchLoader(subset, 64, resolution, shuffle=False, preprocessing=prep)
    zero, scale = net.classifier.x_zero, net.classifier.x_scale
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
    """The C engine's rate (batch 1, plain SGD) where no data is at hand: the derived mini-batch
    rate at finetune's defaults scaled to batch 1 (``per_sample_lr``); no probe says that twice it
    still learns, so no ENGINE_HEADROOM (``engine_lr``)."""
    return per_sample_lr(derived_lr(curvature, momentum=0.9), batch_size=32, momentum=0.9)


# The engine's rate is ENGINE_HEADROOM times the linear-scaling rate unless the simulation's probe at
# twice the chosen rate failed (at chance): then the linear-scaling rate itself. Measured
# (docs/results/lr_sweep.md, 2 imported networks x 4 tasks, 3,000 batch-1 steps = the samples of the
# simulation's 3 epochs): where the rate mattered, the best engine rate sat at 2x to 8x the
# linear-scaling rate (2x in 3 rows, 4x in 2, 8x in 1), never below. But where the next octave failed in the simulation, the choice sits at the
# cliff and batch-1 noise pushes twice it over: the demo's searched 71-layer scheme (0.105 chosen, 0.21
# at chance) fell from 93.6% to 57.2% at twice the rate. Where the search stopped at its top octave
# (twice the choice never probed) accuracy was still rising: headroom.
ENGINE_HEADROOM = 2.0


def next_octave_failed(choice: "LrChoice") -> bool:
    """Whether the line search probed twice the chosen rate and that probe failed (at chance)."""
    acc = dict(choice.candidates).get(snap(2.0 * choice.lr))
    return acc is not None and acc <= choice.chance


def engine_lr(choice: "LrChoice", *, batch_size: int, momentum: float) -> float:
    """The C engine's batch-1 plain-SGD rate for a mini-batch ``choice`` made at ``batch_size`` and
    ``momentum``: ``per_sample_lr``, times ENGINE_HEADROOM unless ``next_octave_failed`` (both on the
    2^(k/4) grid, so the product is exact)."""
    headroom = 1.0 if next_octave_failed(choice) else ENGINE_HEADROOM
    return headroom * per_sample_lr(choice.lr, batch_size=batch_size, momentum=momentum)


def per_sample_lr(lr: float, *, batch_size: int, momentum: float) -> float:
    """The batch-1 plain-SGD rate that moves the weights as far per sample as SGD at ``lr`` with
    ``batch_size`` and heavy-ball ``momentum`` (the linear scaling rule): momentum multiplies the
    steady-state step by 1 / (1 - mu), a batch averages ``batch_size`` per-sample gradients."""
    return snap(lr / ((1.0 - momentum) * batch_size))


def snap(lr: float) -> float:
    """``lr`` rounded to the nearest 2^(k/4), within [2^-60, 2^60]: steps of 19%, far below what
    matters for a learning rate, and far above the last-bit differences between CPUs."""
    k = round(4 * math.log2(min(max(lr, 2.0 ** -60), 2.0 ** 60)))
    return float(2.0 ** (k / 4))


def probe_steps(run_steps: int, batch_size: int = 32) -> int:
    """Optimizer steps of each ``--lr auto`` probe: PROBE_STEPS, at least PROBE_SAMPLES samples (a
    batch-1 probe of 30 samples says nothing), and never more than the run itself."""
    return max(1, min(max(PROBE_STEPS, PROBE_SAMPLES // batch_size), run_steps))


@dataclass(frozen=True)
class LrChoice:
    """What ``--lr auto`` tried and chose; recorded in the output's metadata and ``--json``."""

    lr: float
    derived: float
    curvature: HeadCurvature
    probe_steps: int
    candidates: tuple[tuple[float, float], ...]  # (lr, validation accuracy after the probe)
    seconds: float
    chance: float = -1.0  # a probe at or below this accuracy failed (chance's 2-sigma band)

    def as_dict(self) -> dict:
        return {"lr": self.lr, "derived_lr": self.derived, "head_lambda_max": self.curvature.lambda_max,
                "head_samples": self.curvature.samples,
                "probe_steps": self.probe_steps, "seconds": round(self.seconds, 2), "chance_band": self.chance,
                "candidates": [{"lr": lr, "val_accuracy": acc} for lr, acc in self.candidates]}

    def summary(self) -> str:
        tried = ", ".join(f"{lr:.2g}: {acc * 100:.1f}%" for lr, acc in self.candidates)
        return (f"--lr auto chose {self.lr:.3g} (derived {self.derived:.3g} from the head's curvature "
                f"{self.curvature.lambda_max:.3g}; validation accuracy after {self.probe_steps} steps: {tried}; "
                f"{self.seconds:.1f} s)")


def choose_lr(derived: float, steps: int, probe, *, curvature: HeadCurvature, clock, classes: int = 0,
              val_n: int = 0) -> LrChoice:
    """A line search over octaves of ``derived`` with ``probe(lr, steps) -> validation accuracy``.

    Probes 1x and 2x; climbs (to ``AUTO_UP`` octaves) while a larger rate does better, else descends
    (to ``AUTO_DOWN``) while a smaller one does better or the current one failed. Better means by more
    than one validation sample (a tie keeps the rate it has: the lower one when climbing); a probe
    whose accuracy is within chance's 2-sigma band (``classes``, ``val_n``) failed, whatever its
    value: noise between two failed rates must not steer the search. 3 to 4 probes when the derived
    rate is near right, up to 8 when it is far too large."""
    t0 = clock()
    margin = 1.0 / val_n if val_n else 0.0
    floor = chance_band(classes, val_n)
    tried: dict[float, float] = {}

    def score(octave: int) -> float:
        lr = snap(derived * 2.0 ** octave)
        if lr not in tried:
            tried[lr] = float(probe(lr, steps))
        return tried[lr] if tried[lr] > floor else -1.0

    at_derived = score(0)
    best = 1 if score(1) > at_derived + margin else 0
    step = 1 if best == 1 else -1
    while AUTO_DOWN <= best + step <= AUTO_UP and (score(best + step) > score(best) + margin
                                                   or (step < 0 and score(best) < 0)):
        best += step
    return LrChoice(snap(derived * 2.0 ** best), derived, curvature, steps, tuple(sorted(tried.items())),
                    clock() - t0, floor)


def chance_band(classes: int, n: int) -> float:
    """Accuracy at or below which a probe is indistinguishable from guessing (2 sigma above 1/K)."""
    if classes < 2 or n < 1:
        return -1.0
    p = 1.0 / classes
    return p + 2.0 * math.sqrt(p * (1 - p) / n)


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
