"""Model zoo: float MobileNet-style networks (BatchNorm + ReLU6) defined from plain-data specs."""

from mcutrain.models.mobilenet import MobileNetLike
from mcutrain.models.specs import NetSpec
from mcutrain.models.zoo import build_model, conv_shapes, get_spec, model_names, model_summary

__all__ = ["MobileNetLike", "NetSpec", "build_model", "conv_shapes", "get_spec", "model_names", "model_summary"]
