"""Model zoo: float MobileNet-style networks (BatchNorm + ReLU6) defined from plain-data specs.

A model is named by a zoo name or an architecture JSON file (``resolve_spec``; format in
``spec_file`` and docs/own-model.md).
"""

from mcutrain.models.mobilenet import MobileNetLike
from mcutrain.models.spec_file import read_spec_file, spec_from_json, spec_to_json, write_spec_file
from mcutrain.models.specs import BlockSpec, NetSpec
from mcutrain.models.zoo import (
    build_model,
    conv_shapes,
    get_spec,
    model_names,
    model_summary,
    remember_spec,
    resolve_spec,
    zoo_spec,
)

__all__ = ["BlockSpec", "MobileNetLike", "NetSpec", "build_model", "conv_shapes", "get_spec", "model_names",
           "model_summary", "read_spec_file", "remember_spec", "resolve_spec", "spec_from_json", "spec_to_json",
           "write_spec_file", "zoo_spec"]
