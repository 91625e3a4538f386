"""Comparing a fast estimate with a fine-tune analysis: where ``analyze --method both`` writes the
estimate, and the Spearman rank correlation of two contrib documents (also used by
experiments/fast_validation.py). The dispatch of ``--method`` is ``mcutrain.api.analyze``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def fast_path(out: str) -> str:
    """Where ``both`` writes the fast estimate: OUT with ``.fast.json`` instead of ``.json``."""
    p = Path(out)
    return str(p.with_name(p.name[:-5] if p.name.endswith(".json") else p.name)) + ".fast.json"


# ---------------------------------------------------------------------------------------------- ranks


def ranks(values: list[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tied = v == value
        r[tied] = r[tied].mean()
    return r


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation (Pearson of the average ranks); None with < 3 pairs or a constant side."""
    if len(a) != len(b) or len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    value = float(np.corrcoef(ra, rb)[0, 1])
    return value if math.isfinite(value) else None


def rank_agreement(a: dict, b: dict) -> dict:
    """Spearman correlations of two contrib documents on the candidates both have."""
    ks = sorted(set(a["bias"]) & set(b["bias"]), key=int)
    ws = [(i, r) for i in sorted(set(a["weight"]) & set(b["weight"]), key=int)
          for r in sorted(set(a["weight"][i]) & set(b["weight"][i]), key=float)]
    bias = spearman([a["bias"][k] for k in ks], [b["bias"][k] for k in ks])
    weight = spearman([a["weight"][i][r] for i, r in ws], [b["weight"][i][r] for i, r in ws])
    everything = spearman([a["bias"][k] for k in ks] + [a["weight"][i][r] for i, r in ws],
                          [b["bias"][k] for k in ks] + [b["weight"][i][r] for i, r in ws])
    return {"bias": bias, "weight": weight, "all": everything, "bias_n": len(ks), "weight_n": len(ws)}
