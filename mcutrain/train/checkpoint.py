"""Float checkpoints: versioned, self-describing, never unpickled.

A checkpoint holds the float weights (state_dict) and everything needed to use them without the
command that made them: architecture name, classes, input resolution and preprocessing. Loading checks
that the stored tensors match the architecture exactly: a missing or extra parameter is an error
(the reference implementation silently filled missing parameters with ones).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mcutrain.errors import CheckpointError, McutrainError
from mcutrain.io.container import read_container, write_container
from mcutrain.models import MobileNetLike, build_model

KIND = "float-checkpoint"
VERSION = 1


@dataclass(frozen=True)
class CheckpointInfo:
    model: str
    num_classes: int
    resolution: int
    classes: tuple[str, ...]
    preprocessing: dict
    dataset: str = ""
    training: dict = field(default_factory=dict)  # how it was made: command, epochs, metrics

    def to_meta(self) -> dict:
        meta = asdict(self)
        meta["classes"] = list(self.classes)
        return meta

    @classmethod
    def from_meta(cls, meta: dict) -> "CheckpointInfo":
        try:
            return cls(model=meta["model"], num_classes=int(meta["num_classes"]),
                       resolution=int(meta["resolution"]), classes=tuple(meta["classes"]),
                       preprocessing=dict(meta["preprocessing"]), dataset=meta.get("dataset", ""),
                       training=dict(meta.get("training", {})))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"checkpoint metadata is incomplete: {err}") from None


def _stored_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # BatchNorm's num_batches_tracked counter is not stored: it only matters for momentum=None,
    # which mcutrain never uses, and it is the one 0-d tensor safetensors cannot round-trip.
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def state_to_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in _stored_state(model).items()}


def save_checkpoint(path: str | os.PathLike, model: MobileNetLike, info: CheckpointInfo) -> None:
    write_container(path, KIND, VERSION, info.to_meta(), state_to_numpy(model))


def load_checkpoint(path: str | os.PathLike) -> tuple[MobileNetLike, CheckpointInfo]:
    meta, tensors = read_container(path, KIND, (VERSION,))
    info = CheckpointInfo.from_meta(meta)
    try:
        model = build_model(info.model, info.num_classes)
    except McutrainError as err:
        raise CheckpointError(f"{path}: {err}") from None
    load_numpy_state(model, tensors, source=str(path))
    return model, info


def load_numpy_state(model: torch.nn.Module, tensors: dict[str, np.ndarray], source: str) -> None:
    """Strict load: every parameter and buffer present, with the right shape."""
    expected = _stored_state(model)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{source}: weights do not match the architecture "
                              f"(missing: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                              f"unexpected: {extra[:5]}{'...' if len(extra) > 5 else ''})")
    for name, ref in expected.items():
        if tuple(tensors[name].shape) != tuple(ref.shape):
            raise CheckpointError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, "
                                  f"the architecture needs {tuple(ref.shape)}")
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=False)
