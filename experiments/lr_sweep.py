"""The learning-rate sweep behind the defaults: docs/results/lr_sweep.md.

    .venv/bin/python -m experiments.lr_sweep [sim] [device] [NET ...] [--ray auto|HOST:PORT]
                                                    # resumes from docs/results/lr_sweep.jsonl

For each imported network (the paper's int8 mcunet-5fps and mbv2-w0.35, ../shared/upstream) and each
task (the offline sets and an npz of synthetic shapes this script writes), a new 10-class (or K-class)
head is trained under the paper-99kb scheme at 64x64, two ways:

- simulation: ``finetune`` at batch 32, SGD momentum 0.9, 3 epochs on 1,000 training samples, at
  every rate of SIM_GRID and at the default (``--lr auto``);
- C engine: ``compile --target host`` + ``run``, batch 1, plain SGD, DEVICE_STEPS steps, at the default
  (``compile --lr auto --data TASK``) and at DEVICE_FACTORS times it (the engine's rate has no
  mini-batch probes to lean on, so its grid is centred on what the default chose).

With ``--ray`` the simulation's points are independent fine-tunes submitted as Ray tasks
(``mcutrain.search.ray_backend``; docs/cluster.md): the models and data are loaded here and shipped once,
each task computes with one torch thread (a local run uses the process's threads, so the last digits
may differ). The C engine's points stay local (they compile and run a C program here).

Accuracies are on held-out test samples (500 in the simulation, DEVICE_EVAL on the engine). Each
finished point is appended to the .jsonl, so a killed run resumes; the table is rewritten from it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from mcutrain.cli.main import main as cli
from mcutrain.data import load_dataset
from mcutrain.io.atomic import atomic_write_text
from mcutrain.quant.head import new_head
from mcutrain.quant.model_file import load_qmodel, save_qmodel
from mcutrain.train import lr_auto
from mcutrain.train import model_kind as mk
from mcutrain.train.finetune import FinetuneConfig, finetune

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT.parent / "shared" / "upstream" / "mcu_models"
RESULTS = ROOT / "docs" / "results"
NETS = ("mcunet-5fps", "mbv2-w0.35")
TASKS = ("mnist-5k", "fashion-mnist", "digits", "faces", "shapes")
SIM_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
SIM = dict(scheme="paper-99kb", resolution=64, epochs=3, batch_size=32, momentum=0.9, train_subset=1000,
           eval_subset=500, seed=0)
DEVICE_FACTORS = (0.125, 0.25, 0.5, 2.0, 4.0)
DEVICE_TASKS = TASKS[:4]
# The engine sees as many sample gradients as the simulation (3 epochs x 1,000): the linear scaling
# rule that carries the rate from batch 32 to batch 1 holds at an equal number of samples, not steps.
DEVICE_STEPS, DEVICE_EVAL = 3000, 500


def shapes_npz(path: Path, n: int = 900, side: int = 32, seed: int = 0) -> Path:
    """A task no backbone has seen: 3 classes of noisy grey shapes (ring, cross, bar) of random size
    and place, written as ``npz:`` data (the user's own data, as a user would bring it)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side].astype(np.float32)
    images, labels = np.zeros((n, side, side), np.uint8), np.arange(n) % 3
    for i, k in enumerate(labels):
        cy, cx, r = rng.uniform(10, side - 10, 2).tolist() + [rng.uniform(4, 8)]
        d = np.hypot(yy - cy, xx - cx)
        mask = [np.abs(d - r) < 1.5, (np.abs(yy - cy) < 1.5) & (d < r) | (np.abs(xx - cx) < 1.5) & (d < r),
                (np.abs(yy - cy) < 2.5) & (np.abs(xx - cx) < r)][k]
        img = 40 + 150 * mask + rng.normal(0, 25, (side, side))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    np.savez(path, x=images, y=labels, classes=np.array(["ring", "cross", "bar"]))
    return path


def data_arg(task: str, work: Path) -> str:
    return f"npz:{shapes_npz(work / 'shapes.npz')}" if task == "shapes" else task


def quiet_cli(argv: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(argv + ["--json"])
    if code not in (0, 3):  # 3: the run failed to learn (its --json result still comes out): a point
        raise RuntimeError(f"mcutrain {' '.join(argv)} exited {code}")
    return json.loads(out.getvalue())


def imported(net: str, work: Path) -> Path:
    path = work / f"{net}.safetensors"
    if not path.exists():
        quiet_cli(["import", str(UPSTREAM / f"{net}.pkl"), "--format", "tiny-training", "--out", str(path)])
    return path


def sim_point(model: Path, data: str, lr, loaded: dict | None = None, settings: dict | None = None) -> dict:
    """One simulation fine-tune (``SIM`` unless ``settings``); ``loaded``: the model and dataset already
    in memory (shipped to a Ray task: the worker needs neither file)."""
    cfg = FinetuneConfig(model=str(model), data=data, lr=lr, **(settings or SIM))
    r = finetune(cfg, progress=False, **(loaded or {}))
    return {"lr": r["config"]["lr"], "test": r["accuracy"], "val": r["val_accuracy"],
            "loss": r["train_loss_per_epoch"], "lr_auto": r["config"].get("lr_auto")}


def device_point(model: Path, data: str, lr, work: Path) -> dict:
    """One compile + run of the host C engine (batch 1) at ``lr`` (a number or "auto")."""
    folder = work / f"c-{model.stem}-{abs(hash((data, str(lr))))}"
    compiled = quiet_cli(["compile", str(model), "--scheme", SIM["scheme"], "--resolution", str(SIM["resolution"]),
                          "--lr", str(lr), "--data", data, "--target", "host", "--out", str(folder)])
    run = quiet_cli(["run", str(folder), "--data", data, "--steps", str(DEVICE_STEPS), "--eval", str(DEVICE_EVAL)])
    losses = run["losses"]
    return {"lr": compiled["lr"], "test": run["accuracy"]["after"], "before": run["accuracy"]["before"],
            "loss_first_last": [float(np.mean(losses[:50])), float(np.mean(losses[-50:]))],
            "guard": run.get("guard")}


def with_new_head(model: Path, data: str, work: Path) -> Path:
    """The imported model with a zero int8 head for ``data``'s classes (what finetune does itself)."""
    path = work / f"{model.stem}-{abs(hash(data))}-head.safetensors"
    save_qmodel(path, new_head(load_qmodel(model), load_dataset(data, seed=0).classes))
    return path


def points(task: str, regimes: tuple[str, ...]) -> list[tuple[str, object]]:
    sim = [("sim", "auto")] + [("sim", lr) for lr in SIM_GRID] if "sim" in regimes else []
    device = [("device", "auto")] + [("device", f) for f in DEVICE_FACTORS] if "device" in regimes else []
    return sim + (device if task in DEVICE_TASKS else [])


def run_sweep(records_path: Path, work: Path, regimes: tuple[str, ...], nets: tuple[str, ...],
              ray: str | None = None) -> list[dict]:
    done = [json.loads(line) for line in records_path.read_text().splitlines()] if records_path.exists() else []
    if ray is not None and "sim" in regimes:
        sim_on_ray(done, records_path, work, nets, ray)
    keys = {(r["regime"], r["net"], r["task"], str(r["point"])) for r in done}
    for net in nets:
        model = imported(net, work)
        for task in TASKS:
            data = data_arg(task, work)
            headed = None
            at_64 = replace(load_qmodel(model), resolution=SIM["resolution"])
            lam = lr_auto.model_head_curvature(at_64, load_dataset(data, seed=0).train, 0).lambda_max
            for regime, point in points(task, regimes):
                if (regime, net, task, str(point)) in keys:
                    continue
                if regime == "sim":
                    rec = sim_point(model, data, point)
                else:
                    headed = headed or with_new_head(model, data, work)
                    default = next((r["lr"] for r in done if (r["regime"], r["net"], r["task"], r["point"])
                                    == ("device", net, task, "auto")), None)
                    rec = device_point(headed, data, "auto" if point == "auto" else default * point, work)
                rec.update(regime=regime, net=net, task=task, point=point, head_lambda_max=lam)
                record(done, records_path, rec)
    return done


def record(done: list[dict], records_path: Path, rec: dict) -> None:
    done.append(rec)
    with records_path.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"{rec['regime']:6} {rec['net']:12} {rec['task']:14} {str(rec['point']):8} lr {rec['lr']:.3g}: "
          f"test {rec['test']:.3f}", file=sys.stderr, flush=True)


def sim_on_ray(done: list[dict], records_path: Path, work: Path, nets: tuple[str, ...], ray: str) -> None:
    """Every missing simulation point as a Ray task; each is recorded here as it finishes (resumable)."""
    from mcutrain.search.ray_backend import session, stream

    keys = {(r["regime"], r["net"], r["task"], str(r["point"])) for r in done}
    models, datasets, jobs = {}, {}, []
    for net in nets:
        model = imported(net, work)
        models[str(model)] = mk.load_trainable(str(model))  # as finetune loads it
        for task in TASKS:
            data = data_arg(task, work)
            if data not in datasets:
                datasets[data] = load_dataset(data, seed=0)
            at_64 = replace(models[str(model)], resolution=SIM["resolution"])
            lam = lr_auto.model_head_curvature(at_64, datasets[data].train, 0).lambda_max
            labels = dict(regime="sim", net=net, task=task, head_lambda_max=lam)
            jobs += [(str(model), data, point, {**labels, "point": point}, SIM)
                     for _, point in points(task, ("sim",)) if ("sim", net, task, str(point)) not in keys]
    if jobs:
        with session(ray):
            stream(sim_job, jobs, {"models": models, "datasets": datasets},
                   lambda rec: record(done, records_path, rec))


def sim_job(shared: dict, job: tuple):
    """A Ray task: one simulation point on the shipped model and data, at the driver's settings."""
    model, data, point, labels, settings = job
    loaded = {"model": shared["models"][model], "dataset": shared["datasets"][data]}
    yield {**sim_point(Path(model), data, point, loaded, settings), **labels}


def table(records: list[dict]) -> str:
    lines = ["| task | network | regime | default lr | default acc | best lr | best acc | default - best |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    gaps = []
    for task in TASKS:
        for net in NETS:
            for regime in ("sim", "device"):
                rows = [r for r in records if (r["task"], r["net"], r["regime"]) == (task, net, regime)]
                default = next((r for r in rows if r["point"] == "auto"), None)
                if default is None:
                    continue
                best = max(rows, key=lambda r: r["test"])
                gap = 100 * (default["test"] - best["test"])
                gaps.append(gap)
                lines.append(f"| {task} | {net} | {'simulation, batch 32' if regime == 'sim' else 'C engine, batch 1'} "
                             f"| {default['lr']:.3g} | {100 * default['test']:.1f}% | {best['lr']:.3g} | "
                             f"{100 * best['test']:.1f}% | {gap:+.1f} |")
    worst = min(gaps) if gaps else math.nan
    within = sum(g >= -2.0 for g in gaps)
    return "\n".join(lines) + (f"\n\nWithin 2 points of the best: {within} of {len(gaps)} rows; worst gap {worst:+.1f} "
                               f"points.\n")


def grid(records: list[dict]) -> str:
    lines = ["| regime | network | task | lr | test acc | note |", "|---|---|---|---:|---:|---|"]
    for r in sorted(records, key=lambda r: (r["regime"], r["net"], r["task"], r["lr"])):
        note = "default" if r["point"] == "auto" else ""
        if r.get("guard") and r["guard"].get("rollbacks"):
            note += f" {r['guard']['rollbacks']} rollback(s)"
        lines.append(f"| {r['regime']} | {r['net']} | {r['task']} | {r['lr']:.3g} | {100 * r['test']:.1f}% | {note} |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    """Test accuracy against lr * lambda_max (the dimensionless rate), one line per (task, network):
    if the derivation is right the curves line up, and the default (a dot) sits at their top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mcutrain.io.figure import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, regime, title in zip(axes, ("sim", "device"), ("simulation, batch 32, momentum 0.9",
                                                           "C engine, batch 1, plain SGD")):
        for task in TASKS:
            for net in NETS:
                rows = sorted((r for r in records if (r["regime"], r["task"], r["net"]) == (regime, task, net)),
                              key=lambda r: r["lr"])
                if not rows:
                    continue
                x = [r["lr"] * r["head_lambda_max"] for r in rows]
                line, = ax.plot(x, [100 * r["test"] for r in rows], marker=".", alpha=0.7, label=f"{task} / {net}")
                for r in rows:
                    if r["point"] == "auto":
                        ax.plot(r["lr"] * r["head_lambda_max"], 100 * r["test"], "o", ms=8, color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel("lr x lambda_max (head curvature)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=7, loc="lower left")  # the simulation has every (task, network)
    fig.suptitle("Learning-rate sweep: big dots are the default (--lr auto)")
    save_figure(fig, path, dpi=110)


def main() -> int:
    if not UPSTREAM.is_dir():
        print(f"skipped: the paper's models are not at {UPSTREAM}", file=sys.stderr)
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mcutrain-lr-sweep-") as tmp:
        regimes = tuple(a for a in sys.argv[1:] if a in ("sim", "device")) or ("sim", "device")
        nets = tuple(a for a in sys.argv[1:] if a in NETS) or NETS
        ray = sys.argv[sys.argv.index("--ray") + 1] if "--ray" in sys.argv[1:-1] else None
        records = run_sweep(RESULTS / "lr_sweep.jsonl", Path(tmp), regimes, nets, ray)
    plot(records, RESULTS / "lr_sweep.png")
    atomic_write_text(RESULTS / "lr_sweep.md", HEADER + table(records) + "\n![accuracy against lr x lambda_max]"
                      "(lr_sweep.png)\n\n## Every point\n\n" + grid(records))
    return 0


HEADER = """# Learning-rate sweep: the default against the best rate

Made by `.venv/bin/python -m experiments.lr_sweep` (`experiments/lr_sweep.py` says exactly what each point
is; raw points in `lr_sweep.jsonl`; measured on the shared 2-core machine, one seed per point). The
default is `--lr auto` (`mcutrain/train/lr_auto.py`, [docs/learning-rate.md](../learning-rate.md)):

- simulation (`finetune`, batch 32, momentum 0.9, 3 epochs on 1,000 samples, paper-99kb at 64x64):
  the rate derived from the new head's curvature, moved by a line search of 30-step probes on the
  validation split;
- C engine (`compile --lr auto --data` + `run`, batch 1, plain SGD, 3,000 steps: as many sample
  gradients as the simulation's 3 epochs): the simulation's choice scaled to batch 1 by the linear
  scaling rule, times 2 unless the probe at twice the choice failed (`lr_auto.engine_lr`); its grid
  is 1/8 to 4 times it.

The engine's points were measured before its default was doubled and relabelled after (the new default
is exactly the old 2x point; a fresh `--lr auto` run reproduced that point's rate and accuracy).
"Best" is the best test accuracy of the sweep's grid (test: 500 samples, 30 for faces). The standard error of
one accuracy is 1-2 points at 500 samples: a single gap of 2 points is within noise.

"""


if __name__ == "__main__":
    sys.exit(main())
