"""The int8 samples `mcutrain run` feeds an imported graph (``codegen.samples``, preprocessing kind
``int8-graph``) are the simulation's int8 inputs (``GraphNet.quantize_input`` of the loader's batch):
``p - 128`` at the graph's own H x W, one grey channel as the rounded mean of R, G, B."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcutrain.codegen.samples import int8_samples
from mcutrain.data import BatchLoader, ImageSet, load_dataset
from mcutrain.train import model_kind as mk
from tests.helpers.trainable_graphs import ResNetLike, VwwLike, trainable_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("module_type", [VwwLike, ResNetLike])  # 1 channel 13x9, 3 channels 15x15
def test_samples_are_the_simulations_int8_input(digits, module_type):
    model = trainable_model(module_type, digits)
    facts = mk.target_facts(model, "m.safetensors")
    images, labels = int8_samples(digits.test, 40, seed=3, resolution=facts.resolution,
                                  preprocessing=facts.preprocessing, input_scale=float(facts.input.scale),
                                  input_zero=int(facts.input.zero))
    net = mk.simulation(model)
    assert images.shape == (40,) + net.input_chw and images.dtype == np.int8
    order = np.random.default_rng(3).permutation(len(digits.test))[:40]  # int8_samples' seeded order
    chosen = ImageSet(digits.test.images[order], digits.test.labels[order])
    (x, _), = list(BatchLoader(chosen, 40, tuple(facts.resolution), shuffle=False))
    assert np.array_equal(images, net.quantize_input(x).to(torch.int8).numpy())
    assert np.array_equal(labels, chosen.labels) and len(np.unique(images)) > 50


def test_target_facts_of_a_graph(digits):
    model = trainable_model(VwwLike, digits)
    facts = mk.target_facts(model, "/x/vww.safetensors")
    assert (facts.spec.name, facts.resolution, facts.num_classes) == ("vww.safetensors", [13, 9], 10)
    assert facts.preprocessing == {"kind": "int8-graph", "height": 13, "width": 9, "channels": 1}
    assert mk.recorded_curvature(model) is None and mk.engine_model(model) is model.graph
    empty, _ = int8_samples(digits.test, 0, seed=0, resolution=facts.resolution,
                            preprocessing=facts.preprocessing, input_scale=1.0, input_zero=0)
    assert empty.shape == (0, 1, 13, 9)
