"""mcutrain: train int8 MobileNet-style networks on microcontrollers (MCUNetV3-style).

The Python API (every name in ``__all__``; see `mcutrain.api` for the rules they follow)::

    import mcutrain

    model = mcutrain.load_model("mbv2-w0.35", resolution=64)
    print(model)                                          # layers, weights, MACs
    program = mcutrain.compile(model, "bias-only")        # one training step, compiled
    print(program)                                        # SRAM and Flash, byte by byte

The same steps are the ``mcutrain`` commands (``mcutrain --help``); docs/api.md and
examples/tutorial.py tell the whole story.

Pipeline, in package order: models -> data -> train (float) -> quant (int8, QAS) -> sparse/search
-> engine (ir, autodiff, passes, memory, executor, codegen) -> cli -> reports; ``api`` over them all.
"""

__version__ = "0.1.0"

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads the name)
if TYPE_CHECKING:  # the names, for type checkers; at run time they load on first use (``__getattr__``)
    from mcutrain.api import (Analysis, CompiledProgram, DatasetInfo, Datasets, DemoResult, EvalResult,
                              ExportResult, FinetuneResult, ImportResult, Model, PretrainResult, QuantizeResult,
                              Result, RunResult, SchemePlan, Schemes, SearchResult, Table, Zoo, analyze,
                              check_scheme, compile, dataset, datasets, evaluate, export, finetune, generate_c,
                              import_model, load_analysis, load_model, pretrain, quantize, run, run_demo, scheme,
                              schemes, search_scheme, zoo)
    from mcutrain.errors import McutrainError, TrainingFailed

__all__ = [
    "__version__",
    # models
    "Model", "load_model", "import_model", "zoo",
    # data
    "datasets", "dataset",
    # training in the simulation
    "pretrain", "evaluate", "quantize", "finetune",
    # schemes, analysis, search
    "schemes", "scheme", "check_scheme", "analyze", "load_analysis", "search_scheme",
    # the C engine
    "compile", "generate_c", "run", "export",
    # everything at once
    "run_demo",
    # results
    "Result", "Table", "Zoo", "Datasets", "DatasetInfo", "ImportResult", "PretrainResult", "EvalResult",
    "QuantizeResult", "FinetuneResult", "Schemes", "SchemePlan", "Analysis", "SearchResult", "CompiledProgram",
    "RunResult", "ExportResult", "DemoResult",
    # errors
    "McutrainError", "TrainingFailed",
]

_ERRORS = ("McutrainError", "TrainingFailed")


def __getattr__(name: str) -> object:
    """The public names load with ``mcutrain.api`` when first used, so ``import mcutrain`` (and every
    ``mcutrain`` command, which imports this package first) costs no more than it did without them."""
    if name in __all__ and name != "__version__":
        import importlib

        module = importlib.import_module("mcutrain.errors" if name in _ERRORS else "mcutrain.api")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mcutrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
