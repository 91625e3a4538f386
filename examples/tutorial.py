"""mcutrain tutorial: the paper's story in Python, from a pretrained backbone to training on the C engine.

MCUNetV3 ("On-Device Training Under 256KB Memory") makes training fit a microcontroller by updating
only the parts of a network that pay for their memory: a *sparse-update scheme*. This script walks
through it with `mcutrain`'s Python API on the bundled backbone (MobileNetV2-w0.35 pretrained on
Fashion-MNIST at 64x64), with nothing downloaded:

1. load the backbone and look at it (layers, weights, MACs);
2. quantize it to int8, calibrated on its own data;
3. compare three schemes for a new task (MNIST digits) under one SRAM budget: bias-only, one of the
   paper's schemes, and one found by the evolutionary search from the bundled contribution analysis;
4. compile the chosen scheme's training step, generate C for the host and train on that C engine;
5. look at the memory timeline of the training step (a PNG).

Run it:   python examples/tutorial.py            (the full settings: all the data, a longer search)
          python examples/tutorial.py --small    (CI's settings: about a minute on 2 cores)
Every step prints what the matching command prints (`mcutrain quantize`, `scheme show`, ...).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mcutrain
from mcutrain.assets import DEFAULT_BACKBONE, DEFAULT_CONTRIB

TASK = "mnist-5k"  # the new task: 5,000 MNIST digits, which the backbone never saw
BUDGET = "256KB"  # the SRAM of the chip the scheme must train within (1 KB = 1024 bytes)
SIMULATION_LR = 0.05  # batch 32 in the PyTorch simulation
DEVICE_LR = 0.0625  # batch 1 on the C engine: what lr="auto" with data=TASK chooses for this backbone and task


@dataclass(frozen=True)
class Settings:
    """How much work each step does: the full story, or CI's small version of it."""

    own_images: int  # images of the backbone's own data kept for calibration and its accuracy (0: all)
    calibration_batches: int
    train_subset: int  # training images for each simulated fine-tune
    eval_subset: int
    epochs: int
    population: int  # the search: candidates per generation ...
    generations: int  # ... and generations
    steps: int  # batch-1 steps on the C engine
    held_out: int


FULL = Settings(own_images=0, calibration_batches=16, train_subset=0, eval_subset=0, epochs=3,
                population=24, generations=15, steps=1000, held_out=200)
SMALL = Settings(own_images=400, calibration_batches=2, train_subset=96, eval_subset=60, epochs=4,
                 population=4, generations=2, steps=80, held_out=40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", default=bool(os.environ.get("MCUTRAIN_TUTORIAL_SMALL")),
                        help="CI settings: small subsets, a short search, a few steps (or MCUTRAIN_TUTORIAL_SMALL=1)")
    parser.add_argument("--out", default=None, help="folder for every file written (default: a temporary one)")
    args = parser.parse_args()
    settings = SMALL if args.small else FULL
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        tell(Path(args.out), settings)
    else:
        with tempfile.TemporaryDirectory(prefix="mcutrain-tutorial-") as folder:
            tell(Path(folder), settings)


def section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 90 - len(title)))


def tell(work: Path, s: Settings) -> None:
    section("1. The backbone")
    # A float checkpoint, pretrained by `mcutrain pretrain`; `print` lists what `mcutrain zoo` counts.
    backbone = mcutrain.load_model(DEFAULT_BACKBONE)
    print(backbone)

    section("2. Quantize to int8")
    # Calibrate the activation ranges on the backbone's own data. The small run keeps a few hundred
    # Fashion-MNIST images in an .npz file (any npz:PATH or folder:PATH works as a dataset).
    own = own_data(work, s.own_images)
    int8 = mcutrain.quantize(backbone, own, work / "int8.safetensors", calibration_batches=s.calibration_batches)
    print(int8)

    section(f"3. Which parameters to train for {TASK}, within {BUDGET} of SRAM")
    side = int8["resolution"]  # 64: schemes are sized at the resolution the model trains at
    print(mcutrain.schemes(int8.out, resolution=side))  # the built-in schemes, their analytic extra memory
    paper = mcutrain.scheme("paper-49kb", int8.out, resolution=side)
    print(paper)  # the per-conv table: which biases and which share of which weights it trains
    # The contribution analysis says what each bias depth and weight update adds to accuracy. Making
    # one takes half an hour (`mcutrain.analyze`); the one for this backbone and task is bundled.
    analysis = mcutrain.load_analysis(DEFAULT_CONTRIB)
    print(analysis)
    searched = mcutrain.search_scheme("mbv2-w0.35", DEFAULT_CONTRIB, BUDGET, work / "searched.json",
                                      population=s.population, generations=s.generations, quiet=True)
    print(searched)
    candidates = {"bias-only": "bias-only", "paper-49kb": "paper-49kb", "searched": searched.out}
    results = {name: compare(int8.out, scheme, work / f"{name}.safetensors", s) for name, scheme in candidates.items()}
    print(f"\n{'scheme':<12} {'SRAM (KB)':>10} {'fits ' + BUDGET:>11} {'accuracy':>9}")
    for name, (sram, accuracy) in results.items():
        fits = "yes" if sram <= 256 * 1024 else "no"
        print(f"{name:<12} {sram / 1024:>10.1f} {fits:>11} {accuracy * 100:>8.1f}%")

    section("4. Compile the searched scheme to C and train on it")
    # The C engine trains at batch 1 with its learning rate compiled in (lr="auto" with data=TASK derives
    # it from the task's features, in about two minutes: docs/learning-rate.md). Its backward accumulates
    # in float32, the default (the microcontroller's FPU); accumulate="float64" is the audit mode whose C
    # equals the NumPy reference executor bit for bit (docs/firmware.md).
    program = mcutrain.generate_c(int8.out, searched.out, "host", work / "c-host", lr=DEVICE_LR)
    print(program)
    run = mcutrain.run(program.folder or "", TASK, s.steps, eval=s.held_out)
    print(run)

    section("5. The memory timeline of one training step")
    png = program.plot_timeline(work / "memory.png")
    print(f"live memory per op: {png} (forward, backward and update ops shaded)")
    print("\n".join(program.timeline().splitlines()[:12]) + "\n...")


def own_data(work: Path, images: int) -> str:
    """The backbone's own dataset: by name, or a small .npz subset of it."""
    if not images:
        return "fashion-mnist"
    import numpy as np

    from mcutrain.data import load_dataset

    train = load_dataset("fashion-mnist").train.subset(images, seed=0)
    np.savez(work / "fashion-small.npz", x=train.images, y=train.labels)
    return f"npz:{work / 'fashion-small.npz'}"


def compare(model: str, scheme: str, out: Path, s: Settings) -> tuple[int, float]:
    """(total SRAM of the compiled training step, test accuracy after fine-tuning in the simulation)."""
    memory = mcutrain.compile(model, scheme)
    tuned = mcutrain.finetune(model, TASK, scheme, out, epochs=s.epochs, train_subset=s.train_subset,
                              eval_subset=s.eval_subset, lr=SIMULATION_LR, quiet=True)
    return memory.peak_sram_bytes, tuned.accuracy


if __name__ == "__main__":
    main()
