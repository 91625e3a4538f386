"""The paired test and the fine-tune cache of experiments/search_validation_scale.py (issue 14, item 3).

Kept apart from the experiment so that the unit tests (tests/search/test_validation_stats.py) import
it without models or data.

The paired test (``paired_bootstrap``)
    Two schemes A (searched) and B (a baseline) are fine-tuned with the same seeds and judged on the
    same test images; ``a[s, i]`` / ``b[s, i]`` are 1 when seed s's model classifies image i right.
    Per image, d_i = mean over seeds of (a[s, i] - b[s, i]); the difference of the two schemes'
    seed-averaged test accuracies is mean_i d_i. Its 95% interval is a paired bootstrap over the test
    IMAGES (Efron & Tibshirani 1993, ch. 13; the image-level bootstrap of paired classifier comparisons,
    e.g. Dror et al., "The Hitchhiker's Guide to Testing Statistical Significance in NLP", ACL 2018):
    the images are resampled with replacement, each carrying its d_i, i.e. its correctness under EVERY
    seed of both schemes. Why this rather than McNemar's test pooled over seeds: pooling counts one
    image once per seed as if the seeds' answers on it were independent, but an image hard for seed 0
    is hard for seed 1 too, so pooled McNemar's intervals are too narrow by up to sqrt(seeds); resampling
    whole images keeps that dependence, and it gives the difference with an interval in accuracy points
    (what the page reports), not only a p-value. Since d_i takes at most 2 S + 1 values (S seeds), a
    resample is drawn exactly as multinomial counts of those values (fast for 10,000 images).
    What it does NOT cover: training noise beyond the S seeds it averages (the seeds are held fixed;
    with 2-3 seeds their own spread cannot be estimated usefully), so the per-seed differences are
    reported beside it.
    Verdict: "worse" when the whole interval lies below 0, "better" when it lies above 0, else "tie"
    (not significantly different at the 5% level, two-sided).

The criterion (``success``)
    A case is (network, task, budget, searched scheme, baseline) with the baseline using the same or more
    exact SRAM than the searched scheme. It is a SUCCESS unless the searched scheme is significantly worse
    ("worse"). The issue's goal: successes in >= 90% of cases (``GOAL``).

The cache (``FinetuneCache``)
    One JSON line per finished fine-tune in ``<work>/finetunes.jsonl`` (appended, flushed and fsynced by
    this process only; a torn last line from a kill is ignored). A fine-tune is found by its KEY: a dict of
    the settings that determine its result, every value a string or an int (the scheme as canonical text,
    its ratios as fractions; the learning rate as the grid's own text), serialized with sorted keys. No
    float's bytes name anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from mcutrain.io.atomic import append_jsonl, atomic_write_text

GOAL = 0.90  # the goal: the searched scheme not significantly worse in >= 90% of cases
LEVEL = 0.95
RESAMPLES = 4000


@dataclass(frozen=True)
class Comparison:
    """Searched minus baseline, seed-averaged test accuracy (fractions), with its paired 95% interval."""

    difference: float
    low: float
    high: float
    images: int
    seeds: int
    per_seed: tuple[float, ...]  # the difference of each seed's accuracies (training noise, not in the interval)

    @property
    def verdict(self) -> str:
        if self.high < 0:
            return "worse"
        if self.low > 0:
            return "better"
        return "tie"

    def to_json(self) -> dict:
        return {**asdict(self), "per_seed": list(self.per_seed), "verdict": self.verdict}


def correctness(rows: list[str]) -> np.ndarray:
    """[seeds, images] 0/1 array from the per-seed "1"/"0" strings the fine-tunes record."""
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"the seeds were judged on different numbers of test images: {sorted(lengths)}")
    return np.array([[c == "1" for c in r] for r in rows], dtype=np.int8)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                     level: float = LEVEL) -> Comparison:
    """The paired image bootstrap of the module docstring; ``a``, ``b``: [seeds, images] of 0/1, same seeds
    and images in the same order (seed s of ``a`` is paired with seed s of ``b``)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"need two [seeds, images] arrays of one shape, got {a.shape} and {b.shape}")
    seeds, n = a.shape
    # d_i * seeds is an integer in [-seeds, seeds]: count its values, resample the counts
    scaled = (a - b).sum(axis=0)
    values, counts = np.unique(scaled, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=resamples)
    means = draws @ values / (n * seeds)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    per_seed = tuple(float(x) for x in (a.mean(axis=1) - b.mean(axis=1)))
    return Comparison(float(scaled.sum() / (n * seeds)), float(low), float(high), n, seeds, per_seed)


def success(comparison: Comparison) -> bool:
    """The issue's criterion for one case: the searched scheme is not significantly worse."""
    return comparison.verdict != "worse"


def success_rate(comparisons: list[Comparison]) -> tuple[int, int, float]:
    """(successes, cases, share); share is nan without cases."""
    wins = sum(success(c) for c in comparisons)
    return wins, len(comparisons), (wins / len(comparisons) if comparisons else math.nan)


# ---------------------------------------------------------------------------------------------- cache


def ratio_text(ratio: float) -> str:
    """A channel ratio as an exact fraction's text ("1/4", "1"): ratios are fractions of channel counts."""
    return str(Fraction(ratio).limit_denominator(1024))


def scheme_text(bias_layers: tuple[int, ...], weight_ratios: tuple[tuple[int, float], ...]) -> str:
    """What a scheme updates, canonically: equal schemes (under any name) share their fine-tunes."""
    bias = ",".join(str(i) for i in sorted(bias_layers))
    weights = ",".join(f"{i}@{ratio_text(r)}" for i, r in sorted(weight_ratios))
    return f"b[{bias}] w[{weights}]"


def key_text(key: dict) -> str:
    """The canonical text of a cache key; refuses floats so that no float's representation names a run."""
    for name, value in key.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise TypeError(f"cache key field {name!r} must be a str or an int, got {type(value).__name__}")
    return json.dumps(key, sort_keys=True)


class FinetuneCache:
    """Finished fine-tunes by key, read at start, appended to as each finishes (one writer)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            for n, line in enumerate(lines):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    if n == len(lines) - 1:  # a torn last line (killed in mid-write): cut off, so that the
                        atomic_write_text(self.path, "".join(x + "\n" for x in lines[:-1]))  # next append is whole
                        continue  # and that fine-tune is redone
                    raise ValueError(f"{self.path}: line {n + 1} is not JSON (not a cache this experiment wrote)")
                self.records[key_text(entry["key"])] = entry["result"]

    def get(self, key: dict) -> dict | None:
        return self.records.get(key_text(key))

    def put(self, key: dict, result: dict) -> None:
        text = key_text(key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, {"key": key, "result": result})
        self.records[text] = result

    def __len__(self) -> int:
        return len(self.records)
