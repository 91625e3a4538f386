"""Bundled artifacts (small, made by the project's own commands; see README.md here)."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
DEFAULT_BACKBONE = ASSETS / "mbv2-w0.35-fmnist64.safetensors"
DEFAULT_BACKBONE_DATA = "fashion-mnist"
# The contribution analysis of the default backbone (int8, as `mcutrain demo` quantizes it) on the demo's
# new task; the demo uses it only when its int8 model was quantized by the same recipe (quantizer, source
# checkpoint's tensors, calibration settings) for the same task (see README.md here).
DEFAULT_CONTRIB = ASSETS / "mbv2-w0.35-fmnist64.mnist-5k.contrib.json"
