"""Float checkpoints: versioned, self-describing, never unpickled.

A checkpoint holds the float weights (state_dict) and everything needed to use them without the
command that made them: the architecture (the full spec, so a user's JSON architecture is never needed
again), classes, input resolution and preprocessing. Loading checks
that the stored tensors match the architecture exactly: a missing or extra parameter is an error
(the reference implementation silently filled missing parameters with ones).

Versions: 1 names a zoo architecture (meta ``model``), looked up in the zoo; 2 also embeds the
architecture (meta ``spec``, the JSON of docs/own-model.md), which the model is then built from, even
when its name is a zoo name with other layers: the file is the truth. Version 2 is written whenever
the architecture is not a zoo network verbatim; a zoo network is still written as version 1, so such
files stay byte-identical to those of earlier mcutrain (``models.zoo.spec_to_embed`` says why).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mcutrain.errors import CheckpointError, McutrainError
from mcutrain.io.container import read_versioned_container, write_container
from mcutrain.models import MobileNetLike, build_model
from mcutrain.models.zoo import spec_of_file, spec_to_embed

KIND = "float-checkpoint"
VERSION = 2  # the newest; see the module docstring
READS = (1, 2)


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
    if info.model != model.spec.name:
        raise ValueError(f"checkpoint info names {info.model!r}, the model is {model.spec.name!r}")
    meta, spec = info.to_meta(), spec_to_embed(model.spec)
    if spec is not None:
        meta["spec"] = spec
    write_container(path, KIND, VERSION if spec is not None else 1, meta, state_to_numpy(model))


def load_checkpoint(path: str | os.PathLike) -> tuple[MobileNetLike, CheckpointInfo]:
    version, meta, tensors = read_versioned_container(path, KIND, READS)
    info = CheckpointInfo.from_meta(meta)
    try:
        model = build_model(spec_of_file(meta, version, info.model), info.num_classes)
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
