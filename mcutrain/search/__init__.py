"""Choosing a sparse-update scheme: contribution analysis now, evolutionary search next (DESIGN.md 5).

``contrib``  the analysis (``analyze``), its contrib.json (``load_contrib``) and the additive model of
             a scheme's accuracy gain the search maximises (``predicted_gain``);
``runs``     one analysis fine-tune (``RunSpec``) and running many, here or in worker processes;
``cache``    the resumable per-run cache ``<out>.runs.jsonl``;
``grid``     which runs: the bias grid, the candidate layers and ratios.
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
from mcutrain.search.runs import RunSpec

__all__ = ["AnalysisConfig", "Contrib", "RunSpec", "analyze", "bias_gain", "contrib_from_doc", "load_contrib",
           "plan_runs", "predicted_gain", "runs_path", "summary"]
