"""Accuracy of a float model on one split."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcutrain.data import BatchLoader, ImageSet, Preprocessing


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: ImageSet, resolution: int, preprocessing: Preprocessing,
             batch_size: int = 256) -> dict:
    """{"accuracy", "loss", "n"} over every sample of ``data`` (model put in eval mode)."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    loader = BatchLoader(data, batch_size, resolution, shuffle=False, preprocessing=preprocessing)
    for x, y in loader:
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train(was_training)
    n = len(data)
    return {"accuracy": correct / n, "loss": loss_sum / n, "n": n}
