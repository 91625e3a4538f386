"""The valid inputs the fuzz cases are made from (small, so a wrongly accepted case finishes quickly).

``make_assets(folder)`` writes: a random-weight ``tiny`` int8 model at 16x16 with 3 classes, the float
checkpoint of a ``tiny`` for the same task, a 30-image 16x16 npz dataset with 3 classes, an image
folder with 3 classes, the paper's tiny-training .pkl of the int8 model, the ``tiny`` architecture
JSON, a scheme JSON and a contribution analysis JSON for ``tiny``. Every one of them is accepted by
its commands: ``test_fuzz.test_valid_inputs_are_accepted`` checks it, so a hostile case refused for a
reason unrelated to its corruption would show there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESOLUTION, CLASSES, N_IMAGES = 16, 3, 30


@dataclass(frozen=True)
class Assets:
    root: Path
    int8: Path
    float: Path
    npz: Path
    folder: Path
    pkl: Path
    arch: Path
    scheme: Path
    contrib: Path
    n_convs: int


def make_assets(root: Path) -> Assets:
    from mcutrain.data import Preprocessing
    from mcutrain.models.spec_file import spec_to_json
    from mcutrain.quant.model_file import save_qmodel
    from mcutrain.quant.random_model import random_float_model, random_qmodel
    from mcutrain.sparse import get_builtin, scheme_to_json
    from mcutrain.train.checkpoint import CheckpointInfo, save_checkpoint
    from tests.helpers.tiny_training_format import to_tiny_training_dict, write_tiny_training

    root.mkdir(parents=True, exist_ok=True)
    qmodel, _ = random_qmodel("tiny", RESOLUTION, CLASSES, seed=0)
    save_qmodel(root / "int8.safetensors", qmodel)
    info = CheckpointInfo(model="tiny", num_classes=CLASSES, resolution=RESOLUTION,
                          classes=tuple(str(i) for i in range(CLASSES)), preprocessing=Preprocessing().to_dict(),
                          dataset="npz", training={"config": {"seed": 0}})
    save_checkpoint(root / "float.safetensors", random_float_model("tiny", CLASSES, seed=0), info)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_IMAGES, RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    labels = np.arange(N_IMAGES) % CLASSES
    np.savez(root / "data.npz", x=images, y=labels)
    folder = write_image_folder(root / "images", images[:12], labels[:12])
    write_tiny_training(root / "model.pkl", to_tiny_training_dict(qmodel))
    (root / "arch.json").write_text(json.dumps(spec_to_json(qmodel.spec)))
    (root / "scheme.json").write_text(json.dumps(scheme_to_json(get_builtin("last-k:4", "tiny"))))
    n_convs = len(qmodel.convs())
    (root / "contrib.json").write_text(json.dumps(contrib_doc(n_convs)))
    return Assets(root, root / "int8.safetensors", root / "float.safetensors", root / "data.npz", folder,
                  root / "model.pkl", root / "arch.json", root / "scheme.json", root / "contrib.json", n_convs)


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels)):
        d = root / f"class{label}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(d / f"{i}.png")
    return root


def contrib_doc(n_convs: int, arch: str = "tiny") -> dict:
    """A small valid contribution analysis of ``tiny`` at 16x16 for a 3-class task."""
    return {"format": "mcutrain-contrib", "version": 1,
            "model": {"arch": arch, "n_convs": n_convs, "resolution": RESOLUTION},
            "data": {"num_classes": CLASSES, "new_head": False, "val_used": 100},
            "baseline": 0.5,
            "bias": {"1": 0.01, "2": 0.02, "4": 0.03},
            "weight": {str(n_convs - 1): {"0.5": 0.01, "1.0": 0.02}, str(n_convs - 2): {"1.0": 0.015}}}
