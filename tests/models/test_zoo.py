"""The zoo against the paper's published facts and against an independent forward-pass count."""

import pytest
import torch
from torch import nn

from mcutrain.errors import ModelError
from mcutrain.models import build_model, conv_shapes, get_spec, model_names, model_summary

# From ../shared/upstream/README.md (the paper's model files): convs, backbone weights, biases, MACs@128.
PAPER = {
    "mcunet-5fps": (42, 463_216, 6_008, 22_453_504),
    "mbv2-w0.35": (51, 238_688, 5_760, 16_646_912),
    "proxyless-w0.3": (60, 320_816, 5_416, 18_619_904),
}
# Blocks marked "res" in the upstream architecture listing.
RESIDUAL_BLOCKS = {
    "mcunet-5fps": [2, 4, 6, 8, 9, 11, 12],
    "mbv2-w0.35": [2, 4, 5, 7, 8, 9, 11, 12, 14, 15],
    "proxyless-w0.3": [2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18],
}


@pytest.mark.parametrize("name", PAPER)
def test_summary_matches_paper(name):
    s = model_summary(name)
    assert (s["convs"], s["backbone_weights"], s["biases"], s["macs"]) == PAPER[name]
    assert s["resolution"] == 128


@pytest.mark.parametrize("name", PAPER)
def test_residual_blocks_match_paper(name):
    spec = get_spec(name)
    assert [i for i, b in enumerate(spec.blocks) if b.residual] == RESIDUAL_BLOCKS[name]


def _count_by_hooks(model: nn.Module, resolution: int) -> tuple[int, int, int]:
    convs, weights, macs = 0, 0, 0

    def hook(module, inputs, output):
        nonlocal macs
        macs += output[0].numel() * module.weight[0].numel()

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            convs += 1
            weights += m.weight.numel()
            m.register_forward_hook(hook)
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, resolution, resolution))
    return convs, weights, macs


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("resolution", [32, 40])
def test_analytic_counts_equal_forward_counts(name, resolution):
    model = build_model(name, 7)
    s = model_summary(name, resolution)
    assert _count_by_hooks(model, resolution) == (s["convs"], s["backbone_weights"], s["macs"])


@pytest.mark.parametrize("name", model_names())
def test_forward_shape_and_classes(name):
    model = build_model(name, 5).eval()
    out = model(torch.randn(2, 3, 48, 48))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


def test_conv_index_names_follow_forward_order():
    names = [c.name for c in conv_shapes(get_spec("mcunet-5fps"), 128)]
    assert names[:4] == ["first_conv", "blocks.0.depthwise", "blocks.0.pointwise2", "blocks.1.pointwise1"]
    assert names[-1] == "blocks.13.pointwise2"
    # The paper's scheme indices refer to this order: conv 21 of mcunet-5fps is a 1x1 expand.
    assert names[21] == "blocks.7.pointwise1"


def test_residual_blocks_start_as_identity():
    model = build_model("tiny", 3)
    block = next(b for b in model.blocks if b.residual)
    assert torch.count_nonzero(block.pointwise2.bn.weight) == 0


def test_unknown_model_and_too_few_classes():
    with pytest.raises(ModelError, match="known models: mcunet-5fps"):
        get_spec("resnet50")
    with pytest.raises(ModelError, match="at least 2 classes"):
        build_model("tiny", 1)
