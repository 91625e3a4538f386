"""Choosing a sparse-update scheme: contribution analysis, exact memory cost, evolutionary search (DESIGN.md 5).

``contrib``  the analysis (``analyze``), its contrib.json (written here, read by ``contrib_file``:
             ``load_contrib``, every field checked) and the additive model of
             a scheme's accuracy gain the search maximises (``predicted_gain``);
``runs``     one analysis fine-tune (``RunSpec``) and running many, here or in worker processes;
``cache``    the resumable per-run cache ``<out>.runs.jsonl``;
``grid``     which runs: the bias grid, the candidate layers and ratios;
``cost``     a candidate's exact SRAM / Flash in ``mcutrain compile``'s figures, fast (``SramCost``);
``budget``   budgets as written ("200KB", KB = 1024 B) and the classifier-only minimum;
``evolve``   evolutionary search under the budget, random search as its baseline (``search``).
"""

from mcutrain.search.contrib import (
    AnalysisConfig,
    Contrib,
    analyze,
    bias_gain,
    contrib_from_doc,
    load_contrib,
    plan_runs,
    predicted_gain,
    runs_path,
    summary,
)
from mcutrain.search.budget import BudgetError, parse_bytes
from mcutrain.search.cost import Cost, SramCost
from mcutrain.search.evolve import SearchConfig, SearchOutcome, search
from mcutrain.search.runs import RunSpec

__all__ = ["AnalysisConfig", "BudgetError", "Contrib", "Cost", "RunSpec", "SearchConfig", "SearchOutcome", "SramCost",
           "parse_bytes", "search", "analyze", "bias_gain", "contrib_from_doc", "load_contrib",
           "plan_runs", "predicted_gain", "runs_path", "summary"]
