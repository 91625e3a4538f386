"""A new classifier head for a new task (transfer learning starts here).

The new head is int8 like the rest (the reference implementation trained an fp32 head in simulation
but an int8 head on the device). Weights and biases start at zero: a linear layer trained by
gradient descent needs no symmetry breaking, the gradient of class k is (p_k - y_k) * x. The weight
scale fixes the head's float range for the whole of training (per-channel scales never change on
the device), so it is chosen generously: +-HEAD_WEIGHT_RANGE, which holds the weights of linear heads
trained on MobileNet features (|w| well below 1) with 1/127 resolution; stochastic rounding makes
updates smaller than one step count in expectation.

``head_classes`` and ``zero_head`` are the rules shared by the zoo's QModel (``new_head``) and by
imported graphs (``mcutrain.quant.graph_head``), so both start a new task the same way.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mcutrain.errors import McutrainError
from mcutrain.quant.qmodel import QLinear, QModel

HEAD_WEIGHT_RANGE = 1.0


def head_classes(classes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The class names of a new head as strings; a classifier needs at least two."""
    classes = tuple(str(c) for c in classes)
    if len(classes) < 2:
        raise McutrainError(f"a classifier needs at least 2 classes, got {len(classes)}")
    return classes


def zero_head(k: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight int8 [k, c], bias int32 [k], per-channel w_scale float32 [k]) of a zero-initialised head."""
    return (np.zeros((k, c), np.int8), np.zeros(k, np.int32),
            np.full(k, HEAD_WEIGHT_RANGE / 127.0, np.float32))


def new_head(model: QModel, classes: tuple[str, ...] | list[str]) -> QModel:
    """``model`` with a zero-initialised int8 classifier for ``classes``."""
    classes = head_classes(classes)
    weight, bias, w_scale = zero_head(len(classes), model.spec.feature_ch)
    head = QLinear(weight=weight, bias=bias, w_scale=w_scale, x=model.classifier.x)
    return replace(model, num_classes=len(classes), classes=classes, classifier=head)
