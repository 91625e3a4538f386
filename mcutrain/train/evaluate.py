"""Accuracy of a float model on one split."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mcutrain.data import BatchLoader, ImageSet, Preprocessing


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: ImageSet, resolution: int, preprocessing: Preprocessing,
             batch_size: int = 256, per_image: bool = False) -> dict:
    """{"accuracy", "loss", "n"} over every sample of ``data`` (model put in eval mode); ``per_image``
    adds "correct", a bool array in the split's order (for paired tests between two models)."""
    was_training = model.training
    model.eval()
    correct, loss_sum, hits = 0, 0.0, []
    loader = BatchLoader(data, batch_size, resolution, shuffle=False, preprocessing=preprocessing)
    for x, y in loader:
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        hit = logits.argmax(1) == y
        correct += hit.sum().item()
        hits.append(hit.numpy())
    model.train(was_training)
    n = len(data)
    out = {"accuracy": correct / n, "loss": loss_sum / n, "n": n}
    if per_image:
        out["correct"] = np.concatenate(hits) if hits else np.zeros(0, bool)
    return out
