"""Post-training quantization: BatchNorm folding, weight/bias quantization, calibration, accuracy."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcutrain.models import build_model
from mcutrain.models.mobilenet import ConvBN
from mcutrain.quant.quantize import fold_batchnorm, quantize_bias, quantize_weights, range_to_qtensor
from mcutrain.quant.sim_model import Int8Net
from tests.helpers.models import quantized


def test_folded_conv_equals_conv_plus_batchnorm():
    torch.manual_seed(0)
    cb = ConvBN(4, 6, 3, 2, depthwise=False, relu6=True).eval()
    with torch.no_grad():
        cb.bn.running_mean.uniform_(-1, 1)
        cb.bn.running_var.uniform_(0.5, 2)
        cb.bn.weight.uniform_(0.5, 2)
    f = fold_batchnorm(cb)
    x = torch.randn(2, 4, 9, 9)
    y = F.conv2d(x, torch.from_numpy(f.weight), torch.from_numpy(f.bias), 2, 1).clamp(0, 6)
    assert torch.allclose(y, cb(x), atol=1e-5)


def test_weights_are_symmetric_per_channel_and_use_the_full_range():
    w = np.random.default_rng(0).normal(size=(5, 3, 3, 3)).astype(np.float32)
    w[2] = 0.0  # a dead channel must not produce NaN
    w_q, s = quantize_weights(w)
    assert w_q.dtype == np.int8 and w_q.min() >= -127
    live = [0, 1, 3, 4]
    assert np.all(np.abs(w_q[live]).reshape(4, -1).max(1) == 127)
    assert np.abs(w_q[live] * s[live, None, None, None] - w[live]).max() <= s.max() / 2 + 1e-7
    assert s[2] == 0 and not w_q[2].any()


def test_bias_uses_input_times_weight_scale_and_saturates():
    b = quantize_bias(np.array([1.0, -1e12]), 0.5, np.array([0.01, 0.01], np.float32))
    assert b[0] == 200 and b[1] == -(2**31)


@pytest.mark.parametrize("lo, hi", [(0.0, 6.0), (-3.0, 1.0), (-0.5, 7.3)])
def test_range_keeps_zero_exact(lo, hi):
    q = range_to_qtensor(lo, hi)
    assert -128 <= q.zero <= 127
    assert abs(q.scale * (-128 - q.zero) - lo) <= q.scale
    if lo == 0.0:
        assert q.zero == -128  # ReLU outputs: the clamp at -128 is the ReLU


def test_relu6_layers_clamp_at_zero_and_six():
    q, _ = quantized("tiny", 32)
    for conv in q.convs():
        if conv.name.endswith(("depthwise", "pointwise1")) or conv.name == "first_conv":
            assert conv.qmin == conv.y.zero == -128
            assert conv.y.scale * (conv.qmax - conv.y.zero) <= 6.0 + conv.y.scale
        else:
            assert (conv.qmin, conv.qmax) == (-128, 127)


def test_int8_logits_track_the_float_model():
    q, model = quantized("tiny", 32, seed=2)
    x = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (16, 3, 32, 32)).astype(np.float32))
    x = (x - 128) / 128
    with torch.no_grad():
        fl = model(x)
        q8 = Int8Net(q)(x)
    corr = np.corrcoef(fl.flatten().numpy(), q8.flatten().numpy())[0, 1]
    assert corr > 0.95, corr


def test_degenerate_channels_are_frozen():
    torch.manual_seed(0)
    model = build_model("tiny", 3).eval()
    with torch.no_grad():
        for m in model.modules():  # residual blocks start with a zero BN scale: give every channel life
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
        model.blocks[1].pointwise1.conv.weight[3] = 0.0
    from tests.helpers.models import random_images
    from mcutrain.quant.quantize import quantize_model
    from mcutrain.train.checkpoint import CheckpointInfo
    info = CheckpointInfo("tiny", 3, 32, ("a", "b", "c"), {"offset": 128.0, "scale": 1 / 128})
    q = quantize_model(model, info, random_images(32, 32), batches=1, batch_size=32)
    assert q.blocks[1].pointwise1.frozen_channels == (3,)
    assert sum(len(c.frozen_channels) for c in q.convs()) == 1


# ------------------------------------------------------------------ CPU-independent ranges and provenance


def test_snap_keeps_range_bits_and_absorbs_last_bit_differences():
    from mcutrain.quant.quantize import RANGE_BITS, snap

    rng = np.random.default_rng(0)
    values = rng.uniform(-8, 8, 1000)
    snapped = np.array([snap(v) for v in values])
    # at most half a unit in the RANGE_BITS-th significant bit away
    assert np.all(np.abs(snapped - values) <= np.abs(values) * 2.0 ** -RANGE_BITS)
    # every snapped value has at most RANGE_BITS significant bits
    for v in snapped:
        m, _ = np.frexp(v)
        assert float(m * 2**RANGE_BITS).is_integer()
    # a float64 difference of a few ULPs (what another summation order gives) lands on the same value
    # unless a grid midpoint lies between; with 1000 random values none does
    moved = [np.nextafter(np.nextafter(v, np.inf), np.inf) for v in values]
    assert np.array_equal(snapped, [snap(v) for v in moved])
    assert snap(0.0) == 0.0 and snap(-1.5) == -1.5 and snap(1.0 + 2.0 ** -20) == 1.0


def test_mean_of_batch_ranges_is_order_free():
    from mcutrain.quant.quantize import exact_mean

    values = [1e16, 1.0, -1e16, 3.0, 0.1, 0.2]
    means = {exact_mean(values[i:] + values[:i]) for i in range(len(values))}
    assert means == {4.3 / 6}  # fsum is exact: every rotation gives the correctly rounded mean


def test_provenance_records_the_recipe_and_survives_a_header_rewrite(tmp_path):
    """The source checkpoint is identified by its tensors: a file whose header changes (another note in
    its metadata) is the same source, while one changed weight is another."""
    from mcutrain.io.container import read_container, write_container
    from mcutrain.io.identity import RECIPE_KEYS, quantization_recipe, tensors_sha256
    from mcutrain.quant.quantize import QUANTIZER, quantize_model
    from mcutrain.train.checkpoint import KIND, CheckpointInfo, load_checkpoint, save_checkpoint
    from tests.helpers.models import random_images

    torch.manual_seed(0)
    info = CheckpointInfo("tiny", 3, 32, ("a", "b", "c"), {"offset": 128.0, "scale": 1 / 128})
    path, rewritten = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_checkpoint(path, build_model("tiny", 3).eval(), info)
    meta, tensors = read_container(path, KIND, (1, 2))
    write_container(rewritten, KIND, 1, {**meta, "training": {"note": "header rewritten"}}, tensors)
    assert path.read_bytes() != rewritten.read_bytes()

    def recipe(p):
        model, inf = load_checkpoint(p)
        q = quantize_model(model, inf, random_images(32, 32), batches=1, batch_size=16, seed=3,
                           calibration_data="random")
        return quantization_recipe(q.provenance)

    r = recipe(path)
    assert set(r) == set(RECIPE_KEYS)
    assert r["quantizer"] == QUANTIZER and r["source_tensors_sha256"] == tensors_sha256(tensors)
    assert (r["calibration_data"], r["calibration_batches"], r["calibration_batch_size"], r["seed"]) == \
        ("random", 1, 16, 3)
    assert recipe(rewritten) == r
    tensors["classifier.bias"] = tensors["classifier.bias"] + np.float32(1e-3)
    write_container(rewritten, KIND, 1, meta, tensors)
    assert recipe(rewritten)["source_tensors_sha256"] != r["source_tensors_sha256"]


def test_calibration_needs_a_batch():
    from mcutrain.errors import McutrainError
    from mcutrain.quant.quantize import quantize_model
    from mcutrain.train.checkpoint import CheckpointInfo
    from tests.helpers.models import random_images

    info = CheckpointInfo("tiny", 3, 32, ("a", "b", "c"), {"offset": 128.0, "scale": 1 / 128})
    with pytest.raises(McutrainError, match="at least 1 batch"):
        quantize_model(build_model("tiny", 3), info, random_images(8, 32), batches=0)
