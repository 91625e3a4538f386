"""Progress of fine-tuning: the frozen-prefix preparation has its own bar, the training bar reaches
its end on the cached (fast) path, both only when progress is on, and watching changes no number."""

import pytest
import torch

from mcutrain.data import Preprocessing, load_dataset
from mcutrain.quant.model_file import load_qmodel
from mcutrain.quant.sim_model import Int8Net
from mcutrain.sparse import load_scheme, resolve
from mcutrain.train.finetune import FinetuneConfig, finetune
from mcutrain.train.prefix_cache import cache_prefix, cache_splits, first_trained_block
from tests.helpers.digits_model import make_digits_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_digits_models(tmp_path_factory.mktemp("digits"))


def _prefix_case(models):
    """An int8 net, the digits splits and the block where training of ``last-k:4`` starts."""
    qmodel = load_qmodel(models[1])
    net = Int8Net(qmodel)
    stop = first_trained_block(net, resolve(load_scheme("last-k:4", qmodel.spec), qmodel.spec))
    data = load_dataset("digits", seed=0)
    splits = {"train": data.train.subset(150, 0), "val": data.val.subset(40, 1), "test": data.test.subset(40, 2)}
    return net, splits, qmodel.resolution, Preprocessing.from_dict(qmodel.preprocessing), stop


def test_the_cache_bar_counts_every_image_when_progress_is_on(models, capsys):
    net, splits, resolution, prep, stop = _prefix_case(models)
    assert stop is not None and stop > 0  # a real split, else there is nothing to cache
    cached = cache_splits(net, splits, resolution, prep, stop, progress=True)
    err = capsys.readouterr().err
    assert f"caching frozen prefix ({stop} blocks)" in err
    assert "230/230" in err  # 150 + 40 + 40 images, all counted, under one bar
    assert set(cached) == {"train", "val", "test"}


def test_the_cache_is_silent_without_progress_and_its_numbers_do_not_depend_on_the_bar(models, capsys):
    net, splits, resolution, prep, stop = _prefix_case(models)
    quiet = cache_splits(net, splits, resolution, prep, stop, progress=False)
    assert capsys.readouterr().err == ""
    watched = cache_splits(net, splits, resolution, prep, stop, progress=True)
    capsys.readouterr()
    for name, data in splits.items():
        plain = cache_prefix(net, data, resolution, prep, stop)  # the function as it was: no bar
        assert plain.dtype == torch.int8 and len(plain) == len(data)
        assert torch.equal(quiet[name], plain) and torch.equal(watched[name], plain)


def _cfg(models, **kw):
    base = dict(model=str(models[1]), data="digits", scheme="last-k:4", out="", epochs=2, batch_size=32,
                lr=0.02, seed=0, train_subset=200, eval_subset=60)
    return FinetuneConfig(**{**base, **kw})


def test_finetune_on_the_fast_path_shows_both_bars_to_the_end_and_watching_changes_nothing(models, capsys):
    watched = finetune(_cfg(models), progress=True)
    err = capsys.readouterr().err
    assert watched["prefix_cached_blocks"] > 0  # the cached path, where the bar used to stay at 0
    steps = 2 * -(-200 // 32)  # two epochs of 7 batches, under one bar
    assert "caching frozen prefix" in err and "320/320" in err  # 200 + 60 + 60 images
    assert "finetune epoch 2/2: 100%" in err and f"{steps}/{steps}" in err
    assert err.index("caching frozen prefix") < err.index("finetune epoch")  # preparation first
    quiet = finetune(_cfg(models), progress=False)
    assert capsys.readouterr().err == ""
    for key in ("accuracy", "accuracy_before", "val_accuracy", "train_loss_per_epoch"):
        assert quiet[key] == watched[key], key


def test_the_uncached_path_shows_the_training_bar_and_no_cache_bar(models, capsys):
    result = finetune(_cfg(models, scheme="full", epochs=1), progress=True)
    err = capsys.readouterr().err
    assert result["prefix_cached_blocks"] == 0
    assert "caching frozen prefix" not in err and "7/7" in err
