"""The Python API: every step of the pipeline as a function, the same steps the ``mcutrain`` commands run.

Everything here is re-exported by ``mcutrain`` itself; use it from there::

    import mcutrain

    model = mcutrain.load_model("mcutrain/assets/mbv2-w0.35-fmnist64.safetensors")
    print(model)                                    # layers, weights, MACs, as `mcutrain zoo`
    q = mcutrain.quantize(model, "fashion-mnist", "int8.safetensors", calibration_batches=4)
    program = mcutrain.compile(q.out, "bias-only", resolution=64)
    print(program)                                  # where every byte of SRAM and Flash lives
    program.plot_timeline("memory.png")

Rules every function follows:

* keyword arguments carry the names and defaults of the command's flags (``--batch-size`` is
  ``batch_size``); the CLI reads its defaults from these signatures (`mcutrain.api.defaults`);
* a function returns a frozen result whose ``to_json()`` is the command's ``--json`` output and whose
  ``str()`` is the command's text (`mcutrain.api.results.Result`);
* a bad input raises `mcutrain.errors.McutrainError` (one line that names the problem); a run that
  fails to learn raises `mcutrain.errors.TrainingFailed`, whose ``result`` holds the measurements;
* progress bars and notes go to stderr (``quiet=True`` silences the bars);
* files are written atomically; paths may be ``str`` or ``pathlib.Path``, and a `mcutrain.Model`
  loaded from a file stands for its file.

Importing ``mcutrain`` is cheap: torch, the trainer and the compiler load when a function runs.
"""

from mcutrain.api.analysis import Analysis, SearchResult, analyze, load_analysis, search_scheme
from mcutrain.api.compiling import CompiledProgram, compile, generate_c
from mcutrain.api.data import DatasetInfo, Datasets, dataset, datasets
from mcutrain.api.demo import DemoResult, run_demo
from mcutrain.api.exporting import ExportResult, export
from mcutrain.api.imports import ImportResult, import_model
from mcutrain.api.models import Model, Zoo, load_model, zoo
from mcutrain.api.results import Result, Table
from mcutrain.api.running import RunResult, run
from mcutrain.api.scheme_plans import SchemePlan, Schemes, check_scheme, scheme, schemes
from mcutrain.api.training import (EvalResult, FinetuneResult, PretrainResult, QuantizeResult, evaluate, finetune,
                                   pretrain, quantize)

__all__ = [
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
]
