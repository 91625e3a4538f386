"""A new classifier head for a new task (transfer learning starts here).

The new head is int8 like the rest (the reference implementation trained an fp32 head in simulation
but an int8 head on the device). Weights and biases start at zero: a linear layer trained by
gradient descent needs no symmetry breaking, the gradient of class k is (p_k - y_k) * x. The weight
scale fixes the head's float range for the whole of training (per-channel scales never change on
the device), so it is chosen generously: +-HEAD_WEIGHT_RANGE, which holds the weights of linear heads
trained on MobileNet features (|w| well below 1) with 1/127 resolution; stochastic rounding makes
updates smaller than one step count in expectation.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mcutrain.errors import McutrainError
from mcutrain.quant.qmodel import QLinear, QModel

HEAD_WEIGHT_RANGE = 1.0


def new_head(model: QModel, classes: tuple[str, ...] | list[str]) -> QModel:
    """``model`` with a zero-initialised int8 classifier for ``classes``."""
    classes = tuple(str(c) for c in classes)
    if len(classes) < 2:
        raise McutrainError(f"a classifier needs at least 2 classes, got {len(classes)}")
    k, c = len(classes), model.spec.feature_ch
    head = QLinear(weight=np.zeros((k, c), np.int8), bias=np.zeros(k, np.int32),
                   w_scale=np.full(k, HEAD_WEIGHT_RANGE / 127.0, np.float32), x=model.classifier.x)
    return replace(model, num_classes=k, classes=classes, classifier=head)
