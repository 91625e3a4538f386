"""Identities of models that survive a rewrite of the file's header: hashes of CONTENTS, not of file bytes.

A file's sha256 changes whenever its container changes (a new header field, another key order, a
format version), although the model it holds is the same. What recognises a model here is what it
computes with:

``tensors_sha256(tensors)``
    names, dtypes (little-endian), shapes and bytes of every tensor, in name order. For a float
    checkpoint: its state (``train.checkpoint.state_to_numpy``), the same tensors the file holds.
``qmodel_identity(qmodel)``
    an int8 model: its architecture name, every tensor (int8 weights, int32 biases, float32 weight
    scales) and every quantization parameter that changes what it computes (per-tensor scales and
    zero points, clamp ranges, frozen channels, strides, groups, input side, classes,
    preprocessing; a general conv's per-axis strides and padding and an H x W input, only where
    present, so that zoo models keep the identities they had). NOT its provenance (how it was
    made): a model with an extra note in its header is the same model.
``quantization_recipe(provenance)``
    what made an int8 model from a float checkpoint (source checkpoint identity + quantizer
    settings), from the int8 model's provenance: the identity a fresh machine reproduces WITHOUT
    comparing the int8 bytes (the demo recognises its bundled analysis by it).

Float values enter these hashes only as stored values (float32 tensor bytes, scales as exact
shortest-repr JSON), never as results of reductions whose bits depend on the CPU: the quantizer
makes those values CPU-independent (``quant.quantize`` says how).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np

# The provenance keys that make an int8 model from a float checkpoint (quant.quantize writes them).
RECIPE_KEYS = ("quantizer", "source_tensors_sha256", "calibration_data", "calibration_batches",
               "calibration_batch_size", "seed")


def tensors_sha256(tensors: Mapping[str, np.ndarray]) -> str:
    """Hex SHA-256 of tensor contents: for each name in sorted order, the name, the dtype, the
    shape and the little-endian C-order bytes (a length-prefixed record, so no two differ alike)."""
    h = hashlib.sha256(b"mcutrain-tensors-v1\n")
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        head = json.dumps([name, array.dtype.newbyteorder("<").str, list(array.shape), len(data)])
        h.update(head.encode() + b"\n")
        h.update(data)
    return h.hexdigest()


def qmodel_tensors(qmodel) -> dict[str, np.ndarray]:
    """The int8 model's tensors under the names the model file uses."""
    tensors: dict[str, np.ndarray] = {}
    for conv in qmodel.convs():
        tensors[f"{conv.name}.weight"] = conv.weight
        tensors[f"{conv.name}.bias"] = conv.bias
        tensors[f"{conv.name}.w_scale"] = conv.w_scale
    tensors["classifier.weight"] = qmodel.classifier.weight
    tensors["classifier.bias"] = qmodel.classifier.bias
    tensors["classifier.w_scale"] = qmodel.classifier.w_scale
    return tensors


def qmodel_parameters(qmodel) -> dict:
    """Every non-tensor quantity that changes what the int8 model computes (JSON-ready)."""

    def q(t) -> list:
        return [float(t.scale), int(t.zero)]

    def geometry(c) -> list:
        # General geometry (issue 13) only where a conv has it: zoo models keep their identities.
        return [list(c.strides), list(c.padding)] if getattr(c, "general_geometry", False) else []

    convs = [[c.name, c.stride, c.groups, q(c.x), q(c.y), c.qmin, c.qmax, list(c.frozen_channels)] + geometry(c)
             for c in qmodel.convs()]
    adds = [None if b.add is None else [q(b.add.a), q(b.add.b), q(b.add.y), b.add.qmin, b.add.qmax]
            for b in qmodel.blocks]
    params = {"arch": qmodel.spec.name, "num_classes": int(qmodel.num_classes), "resolution": int(qmodel.resolution),
              "classes": list(qmodel.classes), "preprocessing": qmodel.preprocessing, "input": q(qmodel.input),
              "convs": convs, "adds": adds, "pool": [q(qmodel.pool.x), q(qmodel.pool.y)],
              "classifier_x": q(qmodel.classifier.x)}
    if getattr(qmodel, "input_hw", None) is not None:
        params["input_hw"] = [int(v) for v in qmodel.input_hw]
    return params


def qmodel_identity(qmodel) -> str:
    """Identity of an int8 model by content: ``<arch>:<sha256 of tensors and parameters>``.

    The architecture name is spelled out so that a message comparing two identities is readable.
    Survives any rewrite of the file that keeps the model (header order, container version, notes
    in the provenance); changes with any weight, bias, scale, zero point or clamp."""
    h = hashlib.sha256(tensors_sha256(qmodel_tensors(qmodel)).encode())
    h.update(json.dumps(qmodel_parameters(qmodel), sort_keys=True).encode())
    return f"{qmodel.spec.name}:{h.hexdigest()}"


def quantization_recipe(provenance: Mapping) -> dict | None:
    """The recipe (``RECIPE_KEYS``) recorded in an int8 model's provenance; None when it was not made by
    this project's quantizer from a checkpoint whose identity it recorded (imported, older files)."""
    if not isinstance(provenance, Mapping) or any(k not in provenance for k in RECIPE_KEYS):
        return None
    return {k: provenance[k] for k in RECIPE_KEYS}


def short(identity: str, n: int = 12) -> str:
    """``arch:0123456789ab`` for messages (the full identity is in the files)."""
    arch, _, digest = identity.rpartition(":")
    return f"{arch}:{digest[:n]}" if arch else identity[:n]
