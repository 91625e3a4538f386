"""Sparse update: which parameters on-device training updates (DESIGN.md section 5).

``scheme``   the Scheme data type, its JSON format, validation, and the resolved UpdatePlan;
``builtin``  the paper's 15 schemes and the baselines (full, last-layer, bias-only, last-k:N);
``analytic`` the paper's analytic extra-memory model that names the paper's schemes ("99kb"), for zoo
             networks and imported graphs;
``table``    the convs a scheme addresses (``ConvTable``): a zoo network's or an imported graph's.
"""

from mcutrain.sparse.analytic import analytic_extra_bytes
from mcutrain.sparse.builtin import builtin_aliases, builtin_names, get_builtin
from mcutrain.sparse.errors import SchemeError
from mcutrain.sparse.scheme import (
    ALLOWED_RATIOS,
    ConvUpdate,
    Scheme,
    UpdatePlan,
    load_scheme,
    resolve,
    save_scheme,
    scheme_from_json,
    scheme_to_json,
    validate,
)

__all__ = [
    "ALLOWED_RATIOS", "ConvUpdate", "Scheme", "SchemeError", "UpdatePlan", "analytic_extra_bytes",
    "builtin_aliases", "builtin_names", "get_builtin", "load_scheme", "resolve", "save_scheme",
    "scheme_from_json", "scheme_to_json", "validate",
]
