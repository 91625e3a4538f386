"""Bundled artifacts (small, made by the project's own commands; see README.md here)."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
DEFAULT_BACKBONE = ASSETS / "mbv2-w0.35-fmnist64.safetensors"
DEFAULT_BACKBONE_DATA = "fashion-mnist"
