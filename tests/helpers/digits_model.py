"""A small trained model shared by tests: `tiny` pretrained on digits at 16x16, then quantized."""

from __future__ import annotations

from pathlib import Path

from mcutrain.data import load_dataset
from mcutrain.quant.model_file import save_qmodel
from mcutrain.quant.quantize import quantize_model
from mcutrain.train.checkpoint import load_checkpoint
from mcutrain.train.pretrain import PretrainConfig, pretrain


def make_digits_models(folder: Path) -> tuple[Path, Path]:
    """(float checkpoint, int8 model file) in ``folder``; about 3 s on one core."""
    cfg = PretrainConfig(model="tiny", data="digits", out=str(folder / "float.safetensors"), epochs=3,
                         batch_size=32, lr=0.05, resolution=16, seed=0)
    pretrain(cfg, progress=False, log=lambda _m: None)
    model, info = load_checkpoint(cfg.out)
    qmodel = quantize_model(model, info, load_dataset("digits", seed=0).train, batches=8, batch_size=32)
    save_qmodel(folder / "int8.safetensors", qmodel)
    return Path(cfg.out), folder / "int8.safetensors"


def make_fresh_head_digits_model(folder: Path) -> Path:
    """The digits int8 model with a new zero head (a task to learn from chance), as a file."""
    from mcutrain.quant.head import new_head
    from mcutrain.quant.model_file import load_qmodel

    model = load_qmodel(make_digits_models(folder)[1])
    path = folder / "fresh-head.safetensors"
    save_qmodel(path, new_head(model, model.classes))
    return path
