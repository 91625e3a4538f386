"""One source of defaults: the CLI reads every flag's default from the API function's signature.

Why: the commands' argument declarations used to carry their own defaults, repeated (``finetune``,
``analyze``, ``compile`` ...); now ``mcutrain.api`` states each default once, in the keyword argument
of the function that does the work, and ``mcutrain/cli/cmd_*.py`` asks for it here
(``tests/api/test_cli_defaults.py`` checks every flag's default against the API's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """``{keyword: default}`` of every parameter of ``function`` that has a default."""
    import inspect

    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}

