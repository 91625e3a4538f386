"""``finetune(per_image=True)``: each test image's correctness, for paired tests between schemes
(experiments/search_validation_scale.py), through the frozen-prefix cache and without it."""

import pytest

from mcutrain.train.finetune import FinetuneConfig, finetune
from tests.helpers.digits_model import make_digits_models


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(make_digits_models(tmp_path_factory.mktemp("digits"))[1])


@pytest.mark.parametrize("augment", [False, True])  # augment turns the frozen-prefix cache off (evaluate())
def test_per_image_correctness_matches_the_accuracy(model, augment):
    cfg = FinetuneConfig(model=model, data="digits", scheme="last-k:2", epochs=1, lr=0.02, seed=0,
                         train_subset=64, eval_subset=90, augment=augment)
    r = finetune(cfg, progress=False, per_image=True)
    marks = r["test_correct"]
    assert len(marks) == r["n"] == 90 and set(marks) <= {"0", "1"}
    assert marks.count("1") / len(marks) == pytest.approx(r["accuracy"])
    assert "test_correct" not in finetune(cfg, progress=False)  # opt-in: other results stay as they were
