"""Float pretraining: SGD + momentum, cosine schedule with warmup, resumable at epoch boundaries.

Reads top to bottom like nanoGPT's train.py: config -> data -> model -> optimizer -> loop. After each
epoch one state file (weights + momentum + epoch + config) and the checkpoint are written atomically,
so a killed run resumed with ``--resume`` loses at most the epoch in progress. Every epoch's shuffle
and augmentation depend only on (seed, epoch), so a resumed run reproduces the uninterrupted one.

The checkpoint and the state hold only what the run computed, never timings: two identical runs
write byte-identical files (models are recognised by their file's hash). Epoch seconds and images/s
go to the log and to the metrics file (``<stem>.metrics.jsonl``, one line per epoch, rewritten
atomically). A loss or weight that becomes NaN or infinite stops the run with ``TrainingDiverged``
before anything of that epoch is written: a non-finite checkpoint is never written.

A run that ends without having learned (``train.health``, judged from the metrics file's per-epoch
training losses and the last validation accuracy: loss at or above chance level log K, risen far
above its start, or validation accuracy at chance) raises ``TrainingFailed`` (exit 3), as does a
diverged one. Either way the checkpoint and the state are removed (the metrics file stays: it is
the record of why), unless ``keep_failed``: then the last finite epoch's files stay.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mcutrain.data import BatchLoader, Preprocessing, SplitDataset, load_dataset, mirror_safe
from mcutrain.errors import McutrainError, TrainingFailed
from mcutrain.io.atomic import atomic_write_text
from mcutrain.io.container import read_container, write_container
from mcutrain.models import MobileNetLike, NetSpec, build_model, resolve_spec, spec_to_json
from mcutrain.train.checkpoint import CheckpointInfo, load_numpy_state, save_checkpoint, state_to_numpy
from mcutrain.train.evaluate import evaluate
from mcutrain.train.health import judge
from mcutrain.train.learning_rate import check_learning_rate

STATE_KIND = "train-state"
STATE_VERSION = 1


@dataclass(frozen=True)
class PretrainConfig:
    model: str  # a zoo name or an architecture .json file
    data: str
    out: str
    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    resolution: int = 0  # 0 = the model's default resolution
    augment: bool = True
    seed: int = 0

    def resolved_resolution(self) -> int:
        return self.resolution or resolve_spec(self.model).default_resolution


def run_paths(out: str) -> dict[str, Path]:
    base = Path(out)
    stem = base.with_suffix("") if base.suffix else base
    return {"checkpoint": base,
            "state": stem.with_name(stem.name + ".state.safetensors"),
            "metrics": stem.with_name(stem.name + ".metrics.jsonl")}


def pretrain(cfg: PretrainConfig, *, resume: bool = False, force: bool = False,
             progress: bool = True, log=print, keep_failed: bool = False) -> dict:
    """Train ``cfg.model`` on ``cfg.data``; returns a summary with test accuracy and ``health``.
    A run that failed to learn raises ``TrainingFailed`` (module docstring)."""
    spec = _check_config(cfg)
    paths = run_paths(cfg.out)
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    resolution = cfg.resolution or spec.default_resolution
    prep = Preprocessing()

    torch.manual_seed(cfg.seed)
    model = build_model(spec, dataset.num_classes)
    optimizer = _make_optimizer(model, cfg)
    start_epoch = _restore_or_start(cfg, paths, model, optimizer, resume=resume, force=force, log=log)

    loader = BatchLoader(dataset.train, cfg.batch_size, resolution, shuffle=True, seed=cfg.seed,
                         augment=cfg.augment, drop_last=True, preprocessing=prep,
                         hflip=mirror_safe(cfg.data))
    total_steps = cfg.epochs * len(loader)
    try:
        _train(cfg, spec, paths, dataset, model, optimizer, loader, start_epoch, total_steps, progress, log)
    except TrainingDiverged as err:
        health = judge([r["train_loss"] for r in _read_metrics(paths["metrics"])] + [math.nan],
                       dataset.num_classes, parameters_finite=not _non_finite_tensors(model))
        raise TrainingDiverged(f"{err}; {_settle_failure(paths, keep_failed)}: lower --lr (now {cfg.lr:g})",
                               result={"checkpoint": None, "diverged": True, "failed": True,
                                       "health": health.to_dict()}) from None

    test = evaluate(model, dataset.test, resolution, prep)
    epochs = _read_metrics(paths["metrics"])
    health = judge([r["train_loss"] for r in epochs], dataset.num_classes,
                   val_accuracy=epochs[-1]["val_accuracy"] if epochs else None, val_n=len(dataset.val),
                   updates=len(epochs) * len(loader))
    summary = {"checkpoint": str(paths["checkpoint"]), "model": spec.name, "data": cfg.data,
               "resolution": resolution, "epochs": cfg.epochs, "test_accuracy": test["accuracy"],
               "test_n": test["n"], "diverged": False, "failed": not health.ok, "health": health.to_dict()}
    if not health.ok:
        fate = _settle_failure(paths, keep_failed)
        summary["checkpoint"] = str(paths["checkpoint"]) if keep_failed else None
        raise TrainingFailed(f"training failed to learn: {health.reason}; {fate}: {health.lr_advice(cfg.lr)}",
                             result=summary)
    return summary


def _train(cfg: PretrainConfig, spec: NetSpec, paths: dict[str, Path], dataset: SplitDataset,
           model: MobileNetLike, optimizer: torch.optim.SGD, loader: BatchLoader, start_epoch: int,
           total_steps: int, progress: bool, log) -> None:
    """The epochs from ``start_epoch``: train, check, validate, write checkpoint, state and metrics."""
    resolution = cfg.resolution or spec.default_resolution
    prep = Preprocessing()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        train_stats = _train_one_epoch(model, optimizer, loader, epoch, total_steps, cfg, progress)
        _check_finite_weights(model, epoch, cfg)
        val = evaluate(model, dataset.val, resolution, prep)
        # The checkpoint and the state hold only what the run computed: identical runs give identical
        # files (a model is recognised by its file's hash). Timings go to the log and the metrics file.
        record = {"epoch": epoch + 1, "train_loss": train_stats["train_loss"],
                  "train_accuracy": train_stats["train_accuracy"], "lr": train_stats["lr"],
                  "val_accuracy": val["accuracy"], "val_loss": val["loss"]}
        timing = {"images_per_s": round(train_stats["images_per_s"], 1),
                  "seconds": round(time.perf_counter() - t0, 2)}
        # Checkpoint first, then the state: a run killed between the two resumes from the state's
        # epoch and rewrites the same checkpoint (the epoch is reproduced exactly).
        save_checkpoint(paths["checkpoint"], model, _info(cfg, spec.name, dataset, resolution, prep, record))
        _save_state(paths["state"], cfg, model, optimizer, epoch + 1)
        _write_metrics(paths["metrics"], {**record, **timing}, epoch + 1)
        log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.4f} "
            f"acc {record['train_accuracy']:.4f} | val acc {val['accuracy']:.4f} | "
            f"{timing['images_per_s']:.0f} img/s, {timing['seconds']:.1f} s")


def _settle_failure(paths: dict[str, Path], keep_failed: bool) -> str:
    """Remove a failed run's checkpoint and state unless ``keep_failed``; says which it did. The
    metrics file stays: it is the record of what the run did (and resuming a failed run with the
    same settings, the only resume allowed, would fail again)."""
    if keep_failed:
        if not paths["checkpoint"].exists():
            return f"no epoch finished, nothing was written to {paths['checkpoint']}"
        return f"the checkpoint of the last finished epoch stays in {paths['checkpoint']} (--keep-failed)"
    for kind in ("checkpoint", "state"):
        paths[kind].unlink(missing_ok=True)
    return f"no checkpoint was kept at {paths['checkpoint']} (--keep-failed keeps it)"


def _read_metrics(path: Path) -> list[dict]:
    """The per-epoch records of the metrics file, in epoch order (lines that are not records skipped)."""
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                records.append((int(record["epoch"]), float(record["train_loss"]), record))
            except (ValueError, KeyError, TypeError):
                continue
    return [r for _, _, r in sorted(records, key=lambda t: t[0])]


def _train_one_epoch(model: MobileNetLike, optimizer: torch.optim.Optimizer, loader: BatchLoader,
                     epoch: int, total_steps: int, cfg: PretrainConfig, progress: bool) -> dict:
    model.train()
    loader.set_epoch(epoch)
    loss_sum, correct, seen = 0.0, 0, 0
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False,
               unit="batch", dynamic_ncols=True)
    for i, (x, y) in enumerate(bar):
        lr = cosine_lr(epoch * len(loader) + i, total_steps, cfg.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(_diverged(cfg, epoch, f"the loss became {loss.item()} at step {i + 1}"))
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        # refresh=False: a refresh from here would print the iterator's stale count (0/N on fast epochs)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", lr=f"{lr:.3g}", refresh=False)
    elapsed = time.perf_counter() - t0
    return {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "lr": lr if seen else cfg.lr, "images_per_s": seen / max(elapsed, 1e-9)}


class TrainingDiverged(TrainingFailed):
    """The loss or the weights became NaN or infinite: nothing of that epoch is written (exit 3)."""


def _diverged(cfg: PretrainConfig, epoch: int, what: str) -> str:
    return f"training diverged in epoch {epoch + 1}/{cfg.epochs} ({what})"


def _check_finite_weights(model: torch.nn.Module, epoch: int, cfg: PretrainConfig) -> None:
    """Refuse to write a checkpoint with a NaN or infinite parameter or BatchNorm statistic (a last
    step can blow the weights up after the last loss was seen finite)."""
    bad = _non_finite_tensors(model)
    if bad:
        raise TrainingDiverged(_diverged(cfg, epoch, f"{len(bad)} of {len(state_to_numpy(model))} tensors are "
                                                     f"not finite, first {bad[0]}"))


def _non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and BatchNorm statistics holding a NaN or an infinity, sorted."""
    return sorted(k for k, v in state_to_numpy(model).items() if v.dtype.kind == "f" and not np.isfinite(v).all())


def _write_metrics(path: Path, record: dict, epochs_done: int) -> None:
    """Rewrite the metrics file atomically with one JSON line per finished epoch: the lines of earlier
    epochs kept (a resumed run's too), any line of this or a later epoch replaced (a run killed after
    writing them and resumed redoes those epochs)."""
    kept = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                earlier = json.loads(line)["epoch"] < epochs_done
            except (ValueError, KeyError, TypeError):
                continue  # a torn line of an older version's append: dropped
            if earlier:
                kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept + [json.dumps(record, sort_keys=True)]))


def cosine_lr(step: int, total_steps: int, base_lr: float) -> float:
    """Linear warmup over the first 3% of steps (at most 500), then cosine decay to zero."""
    warmup = min(500, max(1, total_steps * 3 // 100))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _make_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.SGD:
    # Weight decay on conv/linear weights only: decaying BatchNorm scales and biases hurts small nets.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=cfg.lr, momentum=cfg.momentum)


def _check_config(cfg: PretrainConfig) -> NetSpec:
    spec = resolve_spec(cfg.model)
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise McutrainError(f"--{name.replace('_', '-')} must be at least 1")
    check_learning_rate(cfg.lr)
    if cfg.resolution < 0 or (cfg.resolution and cfg.resolution < 8):
        raise McutrainError("--resolution must be at least 8")
    return spec


def _info(cfg: PretrainConfig, name: str, dataset: SplitDataset, resolution: int, prep: Preprocessing,
          last: dict) -> CheckpointInfo:
    return CheckpointInfo(model=name, num_classes=dataset.num_classes, resolution=resolution,
                          classes=dataset.classes, preprocessing=prep.to_dict(), dataset=cfg.data,
                          training={"config": asdict(cfg), "last_epoch": last})


def _save_state(path: Path, cfg: PretrainConfig, model: MobileNetLike,
                optimizer: torch.optim.SGD, epochs_done: int) -> None:
    tensors = {f"model/{k}": v for k, v in state_to_numpy(model).items()}
    for i, p in enumerate(_params(optimizer)):
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            tensors[f"momentum/{i}"] = buf.detach().numpy()
    # The spec itself, not only cfg.model: a JSON architecture edited between runs must not resume.
    meta = {"config": asdict(cfg), "epochs_done": epochs_done, "spec": spec_to_json(model.spec)}
    write_container(path, STATE_KIND, STATE_VERSION, meta, tensors)


def _restore_or_start(cfg: PretrainConfig, paths: dict[str, Path], model: torch.nn.Module,
                      optimizer: torch.optim.SGD, *, resume: bool, force: bool, log) -> int:
    state_path = paths["state"]
    if not state_path.exists():
        if resume:
            log(f"no saved state at {state_path}: starting from scratch")
        return 0
    if not resume:
        if not force:
            raise McutrainError(f"a run already exists at {state_path}; pass --resume to continue it "
                                f"or --force to start again")
        for p in paths.values():
            p.unlink(missing_ok=True)
        return 0
    meta, tensors = read_container(state_path, STATE_KIND, (STATE_VERSION,))
    _check_same_config(meta["config"], asdict(cfg), state_path)
    _check_same_spec(meta.get("spec"), model.spec, state_path)
    load_numpy_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}, str(state_path))
    for i, p in enumerate(_params(optimizer)):
        if f"momentum/{i}" in tensors:
            optimizer.state[p]["momentum_buffer"] = torch.from_numpy(np.array(tensors[f"momentum/{i}"]))
    log(f"resuming after epoch {meta['epochs_done']}/{cfg.epochs} from {state_path}")
    return int(meta["epochs_done"])


def _check_same_config(saved: dict, current: dict, path: Path) -> None:
    diff = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise McutrainError(f"cannot resume {path}: the settings differ ({detail})")


def _check_same_spec(saved: dict | None, spec: NetSpec, path: Path) -> None:
    # States written before specs were stored have none: their model was a zoo name, checked above.
    if saved is not None and saved != spec_to_json(spec):
        raise McutrainError(f"cannot resume {path}: the architecture {spec.name!r} differs from the one "
                            f"the run started with (was the .json file edited?)")


def _params(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]
