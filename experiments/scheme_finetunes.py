"""Each scheme's fine-tunes, here or as Ray tasks (experiments/search_validation.py's ``--ray``).

The schemes of a validation pair are independent fine-tunes; on Ray (``mcutrain.search.ray_backend``)
each is one task, with the model and data shipped once and a scheme file's text sent with its task,
so the workers need no files. Here they share one frozen-prefix cache (``memo``); a task starts its
own, which gives the same bytes (runs.py: the cached activations are a function of the model, the
split and the data), so the results are the same either way.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def finetuned(best_over_lrs: Callable, model, dataset, schemes: dict[str, str],
              ray: str | None) -> Iterator[tuple[str, dict]]:
    """(name, ``best_over_lrs(model, dataset, scheme, memo)``) of each scheme (a built-in name or a file):
    here in order, or on Ray in the order the tasks finish."""
    if ray is None:
        memo: dict = {}
        for name, scheme in schemes.items():
            yield name, best_over_lrs(model, dataset, scheme, memo)
        return
    from mcutrain.search.ray_backend import session, stream

    jobs = [(name, scheme, Path(scheme).read_text() if Path(scheme).is_file() else None)
            for name, scheme in schemes.items()]
    results: list = []
    with session(ray):
        stream(scheme_job, jobs, {"best_over_lrs": best_over_lrs, "model": model, "dataset": dataset},
               results.append)
    yield from results


def scheme_job(shared: dict, job: tuple) -> Iterator[tuple[str, dict]]:
    """A Ray task: one scheme at every rate; a scheme file is written again from its text first."""
    name, scheme, text = job
    with tempfile.TemporaryDirectory(prefix="mcutrain-validation-") as tmp:
        if text is not None:
            scheme = str(Path(tmp) / Path(scheme).name)
            Path(scheme).write_text(text)
        yield name, shared["best_over_lrs"](shared["model"], shared["dataset"], scheme, {})
