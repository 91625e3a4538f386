"""Float checkpoints: versioned, self-describing, never unpickled.

A checkpoint holds the float weights (state_dict) and everything needed to use them without the
command that made them: the architecture (the full spec, so a user's JSON architecture is never needed
again), classes, input resolution and preprocessing. Loading checks
that the stored tensors match the architecture exactly: a missing or extra parameter is an error
(the reference implementation silently filled missing parameters with ones).

Versions: 1 names a zoo architecture (meta ``model``), looked up in the zoo; 2 also embeds the
architecture (meta ``spec``, the JSON of docs/own-model.md), which the model is then built from, even
when its name is a zoo name with other layers: the file is the truth. Version 2 is written whenever
the architecture is not a zoo network verbatim; a zoo network is still written as version 1, with the
meta of earlier mcutrain (``models.zoo.spec_to_embed`` says why; the container around it changed in
issue 11: its checksum now covers the whole file, see ``io.container``).

Validation on load: every meta field is checked for its type (``True`` is not an integer here), its
range and its consistency with the tensors and the other fields, and a bad one is refused with a
``CheckpointError`` naming the field and what is allowed:
  ``resolution``      an integer in [MIN_RESOLUTION, MAX_RESOLUTION] = [8, 1024] (pretrain's minimum;
                      1024 covers any microcontroller input),
  ``num_classes``     an integer in [2, MAX_CLASSES] = [2, 10000], equal to the number of ``classes``,
  ``classes``         distinct printable strings of 1 to MAX_CLASS_NAME = 256 characters,
  ``preprocessing``   exactly ``offset`` in [0, 255] (a pixel value) and ``scale`` in [1e-6, 1],
  ``model``, ``dataset`` strings, ``training`` an object (its ``config.seed``, read by quantize, an
  integer >= 0), ``spec`` (version 2 only) a valid architecture; no other keys.
Tensors: exactly the architecture's, each with its shape and dtype (float32), every value finite and
of magnitude at most MAX_ABS_VALUE = 1e12 (trained weights and BatchNorm statistics are many orders
below; 1e38 would overflow float32 in the first convolution), BatchNorm running variances >= 0, so a diverged (NaN) checkpoint is refused by eval, quantize and demo.
The field checks (``meta_int`` ...) are shared with the int8 model file (``quant.model_file``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from mcutrain.errors import CheckpointError, McutrainError
from mcutrain.io.container import read_versioned_container, write_container
from mcutrain.models import MobileNetLike, build_model
from mcutrain.data.limits import MAX_CLASSES
from mcutrain.models.spec_file import MAX_RESOLUTION, MIN_RESOLUTION
from mcutrain.models.zoo import spec_of_file, spec_to_embed

KIND = "float-checkpoint"
VERSION = 2  # the newest; see the module docstring
READS = (1, 2)

MIN_CLASSES = 2
MAX_CLASS_NAME = 256
PIXEL_OFFSET_RANGE = (0.0, 255.0)
PREPROCESSING_SCALE_RANGE = (1e-6, 1.0)
MAX_ABS_VALUE = 1e12  # largest magnitude of a stored float (module docstring)
_META_KEYS = ("model", "num_classes", "resolution", "classes", "preprocessing", "dataset", "training", "spec")


# ---------------------------------------------------------------------------------------------- meta fields
# Shared by the float checkpoint and the int8 model file: one wording for one rule.


def meta_int(value: Any, field: str, lo: int, hi: int) -> int:
    """An integer (not a bool) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CheckpointError(f"{field}: {shown(value)} is not an integer in [{lo}, {hi}]")
    return value


def meta_number(value: Any, field: str, lo: float, hi: float) -> float:
    """A finite number (not a bool) in [lo, hi]."""
    # ints compare exactly with floats; math.isfinite(10**400) would raise OverflowError
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            (isinstance(value, int) or math.isfinite(value)) and lo <= value <= hi):
        raise CheckpointError(f"{field}: {shown(value)} is not a finite number in [{lo:g}, {hi:g}]")
    return float(value)


def meta_str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise CheckpointError(f"{field}: {shown(value)} is not a string")
    return value


def meta_dict(value: Any, field: str, required: tuple[str, ...] = (), optional: tuple[str, ...] | None = None) -> dict:
    """A JSON object with the ``required`` keys and, if ``optional`` is given, no keys but those."""
    if not isinstance(value, dict):
        raise CheckpointError(f"{field or 'metadata'}: {shown(value)} is not an object")
    missing = [k for k in required if k not in value]
    if missing:
        raise CheckpointError(f"{field + '.' if field else ''}{missing[0]}: missing")
    if optional is not None:
        unknown = sorted(set(value) - set(required) - set(optional))
        if unknown:
            allowed = ", ".join(sorted(required + optional))
            raise CheckpointError(f"{field + '.' if field else ''}{unknown[0]}: unknown field (allowed: {allowed})")
    return value


def meta_list(value: Any, field: str, length: int | None = None) -> list:
    if not isinstance(value, list):
        raise CheckpointError(f"{field}: {shown(value)} is not a list")
    if length is not None and len(value) != length:
        raise CheckpointError(f"{field}: {len(value)} entries, expected {length}")
    return value


def check_resolution(value: Any) -> int:
    return meta_int(value, "resolution", MIN_RESOLUTION, MAX_RESOLUTION)


def check_classes(num_classes: Any, classes: Any) -> tuple[int, tuple[str, ...]]:
    """(num_classes, class names): a count in [2, MAX_CLASSES] and as many distinct names."""
    k = meta_int(num_classes, "num_classes", MIN_CLASSES, MAX_CLASSES)
    names = meta_list(classes, "classes")
    if len(names) != k:
        raise CheckpointError(f"classes: {len(names)} names, num_classes is {k}")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_CLASS_NAME or not name.isprintable():
            raise CheckpointError(f"classes[{i}]: {shown(name)} is not a printable string of 1 to "
                                  f"{MAX_CLASS_NAME} characters")
    if len(set(names)) != k:
        raise CheckpointError("classes: names must be distinct")
    return k, tuple(names)


def check_preprocessing(value: Any) -> dict[str, float]:
    """``{"offset": [0, 255], "scale": [1e-6, 1]}``: x = (pixel - offset) * scale."""
    d = meta_dict(value, "preprocessing", ("offset", "scale"), ())
    return {"offset": meta_number(d["offset"], "preprocessing.offset", *PIXEL_OFFSET_RANGE),
            "scale": meta_number(d["scale"], "preprocessing.scale", *PREPROCESSING_SCALE_RANGE)}


def _check_training(training: Any) -> dict:
    """How the checkpoint was made: free-form, except what commands read back (the split seed)."""
    meta_dict(training, "training")
    if "config" in training:
        config = meta_dict(training["config"], "training.config")
        if "seed" in config:
            meta_int(config["seed"], "training.config.seed", 0, 2**63 - 1)
    return training


def shown(value: Any) -> str:
    """``repr(value)`` on one line, cut to 60 characters: a forged field may be megabytes long."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


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
    def from_meta(cls, meta: dict, version: int = VERSION) -> "CheckpointInfo":
        """The validated info of a checkpoint's meta (``CheckpointError`` naming a bad field)."""
        meta_dict(meta, "", ("model", "num_classes", "resolution", "classes", "preprocessing"),
                  tuple(k for k in _META_KEYS if k != "spec" or version >= 2))
        num_classes, classes = check_classes(meta["num_classes"], meta["classes"])
        training = _check_training(meta.get("training", {}))
        return cls(model=meta_str(meta["model"], "model"), num_classes=num_classes,
                   resolution=check_resolution(meta["resolution"]), classes=classes,
                   preprocessing=check_preprocessing(meta["preprocessing"]),
                   dataset=meta_str(meta.get("dataset", ""), "dataset"), training=dict(training))


def _stored_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # BatchNorm's num_batches_tracked counter is not stored: it only matters for momentum=None,
    # which mcutrain never uses, and it is the one 0-d tensor safetensors cannot round-trip.
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def state_to_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in _stored_state(model).items()}


def save_checkpoint(path: str | os.PathLike, model: MobileNetLike, info: CheckpointInfo) -> None:
    """Write a checkpoint that ``load_checkpoint`` will accept: a model or info that it would refuse
    (a NaN weight, a field out of range) is refused here, and nothing is written."""
    if info.model != model.spec.name:
        raise ValueError(f"checkpoint info names {info.model!r}, the model is {model.spec.name!r}")
    meta, spec = info.to_meta(), spec_to_embed(model.spec)
    if spec is not None:
        meta["spec"] = spec
    version, tensors = VERSION if spec is not None else 1, state_to_numpy(model)
    try:
        CheckpointInfo.from_meta(meta, version)
    except CheckpointError as err:
        raise CheckpointError(f"refusing to write {path}: {err}") from None
    for name, t in tensors.items():
        bad = int(np.count_nonzero(~np.isfinite(t))) if t.dtype.kind == "f" else 0
        if bad:
            raise CheckpointError(f"refusing to write {path}: {name} has {bad} non-finite values "
                                  f"(NaN or infinity: the training diverged; try a lower --lr)")
    write_container(path, KIND, version, meta, tensors)


def load_checkpoint(path: str | os.PathLike) -> tuple[MobileNetLike, CheckpointInfo]:
    """The float model and its info; anything wrong in the file is a ``CheckpointError`` naming it."""
    version, meta, tensors = read_versioned_container(path, KIND, READS)
    try:
        info = CheckpointInfo.from_meta(meta, version)
        model = build_model(spec_of_file(meta, version, info.model), info.num_classes)
    except McutrainError as err:
        raise CheckpointError(f"{path}: {err}") from None
    load_numpy_state(model, tensors, source=str(path))
    return model, info


def load_numpy_state(model: torch.nn.Module, tensors: dict[str, np.ndarray], source: str) -> None:
    """Strict load: every parameter and buffer present, with the right shape and dtype, all finite."""
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
        _check_values(tensors[name], name, ref, source)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=False)


def _check_values(t: np.ndarray, name: str, ref: torch.Tensor, source: str) -> None:
    want = torch.empty(0, dtype=ref.dtype).numpy().dtype
    if t.dtype != want:
        raise CheckpointError(f"{source}: {name} is {t.dtype}, the architecture needs {want}")
    if t.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(t)))
        if bad:
            raise CheckpointError(f"{source}: {name} has {bad} non-finite values (NaN or infinity): the "
                                  f"training that wrote it diverged; use an earlier checkpoint or a lower --lr")
        if t.size and float(np.abs(t).max()) > MAX_ABS_VALUE:
            raise CheckpointError(f"{source}: {name} has values of magnitude {float(np.abs(t).max()):.3g}, "
                                  f"over the limit of {MAX_ABS_VALUE:g} (a damaged or diverged checkpoint)")
        if name.endswith("running_var") and (t < 0).any():
            raise CheckpointError(f"{source}: {name} has negative variances (must be >= 0)")
