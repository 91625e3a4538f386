"""The criterion of the search validation at scale (experiments/validation_stats.py): the paired image
bootstrap on constructed correctness where the answer is known, and the fine-tune cache's key."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.validation_stats import (FinetuneCache, correctness, key_text, paired_bootstrap, ratio_text,
                                          scheme_text, success, success_rate)


def _pattern(n: int, right: int, rng: np.random.Generator) -> np.ndarray:
    row = np.zeros(n, dtype=np.int8)
    row[rng.permutation(n)[:right]] = 1
    return row


def test_identical_schemes_tie_with_a_zero_interval():
    rng = np.random.default_rng(1)
    a = np.stack([_pattern(1000, 800, rng) for _ in range(2)])
    c = paired_bootstrap(a, a.copy())
    assert (c.difference, c.low, c.high) == (0.0, 0.0, 0.0)
    assert c.verdict == "tie" and success(c)


def test_clearly_worse_is_a_failure_and_clearly_better_a_significant_win():
    n = 2000
    base = np.ones((2, n), dtype=np.int8)
    base[:, :400] = 0  # the baseline: 80% on both seeds
    worse = base.copy()
    worse[:, 400:600] = 0  # the searched scheme: 10 points fewer, on the same images for both seeds
    c = paired_bootstrap(worse, base)
    assert c.difference == pytest.approx(-0.10)
    assert c.high < 0 and c.verdict == "worse" and not success(c)
    assert c.per_seed == pytest.approx((-0.10, -0.10))
    better = paired_bootstrap(base, worse)
    assert better.verdict == "better" and better.low > 0 and success(better)


def test_a_small_difference_on_few_images_is_not_significant():
    n = 300  # 3 images of 300 (1 point) cannot be told from noise
    a = np.ones((2, n), dtype=np.int8)
    a[:, :60] = 0
    b = a.copy()
    b[:, 60:63] = 0
    c = paired_bootstrap(b, a)
    assert c.difference == pytest.approx(-0.01)
    assert c.low < 0 < c.high or c.high == 0.0
    assert c.verdict == "tie"


def test_pairing_matters_disagreements_not_accuracies():
    """Same accuracies (80% vs 79%) on 10,000 images: significant when the schemes disagree only on 100
    images (paired), not when they disagree on thousands."""
    n = 10000
    base = np.ones((1, n), dtype=np.int8)
    base[:, :2000] = 0
    close = base.copy()
    close[:, 2000:2100] = 0  # wrong on 100 more images, right wherever the baseline is
    assert paired_bootstrap(close, base).verdict == "worse"
    rng = np.random.default_rng(0)
    scattered = _pattern(n, 7900, rng)[None, :]
    assert paired_bootstrap(scattered, base).verdict == "tie"


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(5, 60), st.integers(0, 2**31 - 1))
def test_the_interval_holds_the_difference_in_either_order(seeds, n, seed):
    rng = np.random.default_rng(seed)
    a, b = (rng.integers(0, 2, size=(seeds, n), dtype=np.int8) for _ in range(2))
    ab, ba = paired_bootstrap(a, b), paired_bootstrap(b, a)
    assert ab.low - 1e-12 <= ab.difference <= ab.high + 1e-12
    assert ab.difference == pytest.approx((a.mean() - b.mean()))
    assert ba.difference == pytest.approx(-ab.difference)
    # the interval holds the observed difference, so the two orders can never both be "worse" (or "better")
    assert ba.low - 1e-12 <= ba.difference <= ba.high + 1e-12
    assert not (ab.verdict == ba.verdict != "tie")


def test_success_rate_counts_only_significantly_worse_as_failures():
    rng = np.random.default_rng(3)
    a = np.stack([_pattern(500, 400, rng)])
    worse = a.copy()
    worse[0, np.flatnonzero(a[0])[:150]] = 0
    comparisons = [paired_bootstrap(a, a), paired_bootstrap(worse, a), paired_bootstrap(a, worse)]
    assert [c.verdict for c in comparisons] == ["tie", "worse", "better"]
    assert success_rate(comparisons) == (2, 3, pytest.approx(2 / 3))


def test_correctness_reads_the_recorded_strings_and_refuses_unequal_lengths():
    assert correctness(["101", "011"]).tolist() == [[1, 0, 1], [0, 1, 1]]
    with pytest.raises(ValueError, match="different numbers"):
        correctness(["101", "01"])
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(np.ones((2, 3)), np.ones((1, 3)))


def test_the_key_names_a_scheme_by_what_it_updates_with_exact_ratio_fractions():
    assert ratio_text(0.25) == "1/4" and ratio_text(1.0) == "1" and ratio_text(1 / 3) == "1/3"
    one = scheme_text((40, 39, 41), ((41, 0.25), (40, 1.0)))
    assert one == "b[39,40,41] w[40@1,41@1/4]"
    assert scheme_text((39, 40, 41), ((40, 1.0), (41, 0.25))) == one  # order does not matter
    assert scheme_text((39, 40, 41), ((40, 1.0), (41, 0.5))) != one


def test_the_key_refuses_floats_and_is_independent_of_field_order():
    assert key_text({"lr": "0.01", "seed": 1}) == key_text({"seed": 1, "lr": "0.01"})
    with pytest.raises(TypeError, match="'lr'"):
        key_text({"lr": 0.01})
    with pytest.raises(TypeError, match="'qas'"):
        key_text({"qas": True})


def test_the_cache_resumes_and_cuts_a_torn_last_line(tmp_path):
    path = tmp_path / "finetunes.jsonl"
    cache = FinetuneCache(path)
    key = {"net": "n", "lr": "0.01", "seed": 0}
    assert cache.get(key) is None
    cache.put(key, {"val": 0.5})
    cache.put({**key, "seed": 1}, {"val": 0.6})
    with open(path, "a") as f:
        f.write('{"key": {"net": "n", "lr": "0.01", "se')  # killed in mid-write
    again = FinetuneCache(path)
    assert len(again) == 2 and again.get({"seed": 1, "lr": "0.01", "net": "n"}) == {"val": 0.6}
    again.put({**key, "seed": 2}, {"val": 0.7})
    lines = path.read_text().splitlines()
    assert [json.loads(x)["result"]["val"] for x in lines] == [0.5, 0.6, 0.7]
    assert len(FinetuneCache(path)) == 3
