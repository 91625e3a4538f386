"""contrib.json read back: the ``Contrib`` tables, every field checked before use, and the check that
an analysis was made for the model a search is given (format: ``search.contrib``'s module docstring).

Split from ``search.contrib`` (which runs the analysis and writes the document) so that reading a
user's file - the part hostile input reaches - stands on its own."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mcutrain.data.limits import MAX_CLASSES
from mcutrain.errors import McutrainError
from mcutrain.io.atomic import file_sha256
from mcutrain.io.identity import short
from mcutrain.io.jsonfile import brief, check_keys, read_json_file
from mcutrain.models.spec_file import MAX_BLOCKS, MAX_RESOLUTION, MIN_RESOLUTION
from mcutrain.sparse.scheme import ALLOWED_RATIOS

FORMAT = "mcutrain-contrib"
VERSION = 2  # 2: optional "seeds" (per-seed accuracies), "se" (seed standard errors), "head" (warm-started head)
READABLE_VERSIONS = (1, 2)  # a version 1 document is a version 2 one without the optional sections


@dataclass(frozen=True)
class Contrib:
    """A validated contrib.json: dAcc tables with int layer keys and float ratio keys."""

    arch: str
    n_convs: int
    baseline: float
    bias: dict[int, float]
    weight: dict[int, dict[float, float]]
    doc: dict
    se: "SeedErrors | None" = None  # standard errors of the deltas from paired seeds (``--seeds`` >= 2)

    def weight_options(self) -> list[tuple[int, float]]:
        """Every analysed (layer, ratio): the search's weight choices."""
        return [(i, r) for i in sorted(self.weight) for r in sorted(self.weight[i])]


@dataclass(frozen=True)
class SeedErrors:
    """The document's ``se`` section: the standard error of each delta over its paired seeds."""

    seeds: int
    baseline: float
    bias: dict[int, float]
    weight: dict[int, dict[float, float]]


def load_contrib(path: str | os.PathLike) -> Contrib:
    """Read and validate contrib.json; every error names the file."""
    return read_json_file(path, contrib_from_doc, McutrainError, "no such file (make it with `mcutrain analyze`)")


_TOP_KEYS = ("format", "version", "model", "data", "settings", "metric", "note", "grid", "baseline", "bias",
             "weight", "accuracy", "unstable", "failed", "runs", "runs_new", "wall_seconds", "run_seconds",
             "workers", "seeds", "se", "head")
MAX_CONVS = 3 * MAX_BLOCKS + 1  # an architecture's limit: a stem and three convs per block
MAX_SAMPLES = 10**9


def contrib_from_doc(doc: dict) -> Contrib:
    """Validate a contrib document (format, version, known keys, the fields search reads, tables)
    and parse its keys. Fields search reads are checked for type and range before use: a forged
    resolution or class count would otherwise size the search's model."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise McutrainError(f"not a contribution analysis: 'format' must be {FORMAT!r}")
    if doc.get("version") not in READABLE_VERSIONS or isinstance(doc.get("version"), bool):
        raise McutrainError(f"contrib format version {brief(doc.get('version'))} is not supported "
                            f"(this mcutrain reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    check_keys(doc, _TOP_KEYS, "a contribution analysis", McutrainError)
    _check_sections(doc)
    try:
        _check_model_identity(doc["model"])
        arch, n = str(doc["model"]["arch"]), int(doc["model"]["n_convs"])
        baseline = _accuracy(doc["baseline"], "baseline")
        bias = {_key(k, 1, n, "bias"): _delta(v, f"bias[{k}]") for k, v in doc["bias"].items()}
        weight = {_key(i, 0, n - 1, "weight"): _ratios(row, f"weight[{i}]") for i, row in doc["weight"].items()}
        se = _seed_errors(doc.get("se"), bias, weight, n)
        _check_seed_accuracies(doc.get("seeds"))
    except (KeyError, TypeError, AttributeError) as err:
        raise McutrainError(f"malformed contrib document ({type(err).__name__}: {err})") from None
    missing = sorted(n - i for i in weight if n - i not in bias)
    if missing:
        raise McutrainError(f"weight runs need the bias runs k = model.n_convs - layer = {missing[:8]} "
                            f"(model.n_convs is {n}), which are missing from 'bias'")
    return Contrib(arch, n, baseline, bias, weight, doc, se)


MAX_SEEDS = 1000


def _seed_errors(section, bias: dict[int, float], weight: dict[int, dict[float, float]], n: int) -> SeedErrors | None:
    """``se``: a standard error in [0, 1] for EVERY delta of the tables (a partial table would let the
    search shrink some deltas by their seeds and others by nothing), from >= 2 seeds."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise McutrainError(f"'se' must be an object, got {brief(section)}")
    _int_field(section, "se", "seeds", 2, MAX_SEEDS, required=True)
    if not isinstance(section.get("bias"), dict) or not isinstance(section.get("weight"), dict):
        raise McutrainError("'se' must hold 'bias' and 'weight' tables like the document's")
    se_bias = {_key(k, 1, n, "se.bias"): _error(v, f"se.bias[{k}]") for k, v in section["bias"].items()}
    se_weight = {}
    for i, row in section["weight"].items():
        if not isinstance(row, dict):
            raise McutrainError(f"'se.weight[{brief(i)}]' must be an object of ratio -> standard error")
        se_weight[_key(i, 0, n - 1, "se.weight")] = {_ratio(r, f"se.weight[{i}]"): _error(v, f"se.weight[{i}][{r}]")
                                                     for r, v in row.items()}
    if set(se_bias) != set(bias) or {i: set(r) for i, r in se_weight.items()} != {i: set(r) for i, r in weight.items()}:
        raise McutrainError("'se' must give a standard error for exactly the deltas in 'bias' and 'weight'")
    return SeedErrors(section["seeds"], _error(section.get("baseline"), "se.baseline"), se_bias, se_weight)


def _check_seed_accuracies(section) -> None:
    """``seeds``: the per-seed accuracies (information: the search reads the means and ``se``); checked
    for shape and range so a reader can trust them."""
    if section is None:
        return
    if not isinstance(section, dict):
        raise McutrainError(f"'seeds' must be an object, got {brief(section)}")
    _int_field(section, "seeds", "n", 1, MAX_SEEDS, required=True)
    lists = [section.get("baseline")] + list((section.get("bias") or {}).values())
    lists += [v for row in (section.get("weight") or {}).values() for v in (row.values() if isinstance(row, dict)
                                                                               else [None])]
    for values in lists:
        if not isinstance(values, list) or len(values) != section["n"]:
            raise McutrainError(f"'seeds' must hold a list of {section['n']} accuracies per run, got {brief(values)}")
        for v in values:
            _accuracy(v, "a per-seed accuracy")


def _check_sections(doc: dict) -> None:
    """The sections' types and the numbers search uses (n_convs, resolution, class count, sample counts)."""
    for section, required in (("model", True), ("data", False), ("settings", False), ("bias", True),
                              ("weight", True), ("head", False)):
        if (required or section in doc) and not isinstance(doc.get(section), dict):
            raise McutrainError(f"'{section}' must be an object, got {brief(doc.get(section))}")
    model, data, settings = doc["model"], doc.get("data", {}), doc.get("settings", {})
    _int_field(model, "model", "n_convs", 1, MAX_CONVS, required=True)
    _resolution_field(model)
    _int_field(data, "data", "num_classes", 2, MAX_CLASSES)
    _int_field(data, "data", "train_used", 1, MAX_SAMPLES)
    _int_field(data, "data", "val_used", 1, MAX_SAMPLES)
    _int_field(settings, "settings", "eval_subset", 0, MAX_SAMPLES)
    if "new_head" in data and not isinstance(data["new_head"], bool):
        raise McutrainError(f"'data.new_head' must be true or false, got {brief(data['new_head'])}")
    for i, row in doc["weight"].items():
        if not isinstance(row, dict):
            raise McutrainError(f"'weight[{brief(i)}]' must be an object of ratio -> gain, got {brief(row)}")


def _int_field(section: dict, where: str, key: str, lo: int, hi: int, required: bool = False) -> None:
    if key not in section and not required:
        return
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise McutrainError(f"'{where}.{key}' must be an integer in [{lo}, {hi}], got {brief(value)}")


def _resolution_field(model: dict) -> None:
    """An input side (a zoo model), or [height, width] (an imported graph's input, arch ``graph``)."""
    value = model.get("resolution")
    if isinstance(value, list) and len(value) == 2:
        for side in value:
            _int_field({"resolution": side}, "model", "resolution", 1, MAX_RESOLUTION)
        return
    _int_field(model, "model", "resolution", MIN_RESOLUTION, MAX_RESOLUTION)


def _check_model_identity(model: dict) -> None:
    """The identity fields search relies on, when present, must have their form (a forged or damaged
    field must not switch the model check off)."""
    identity, sha256 = model.get("identity"), model.get("sha256")
    if identity is not None and not (isinstance(identity, str) and re.fullmatch(r"[^:]+:[0-9a-f]{64}", identity)):
        raise McutrainError(f"'model.identity' must be '<arch>:<64 hex digits>' (io.identity), got {identity!r:.80}")
    if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)):
        raise McutrainError(f"'model.sha256' must be 64 hex digits, got {sha256!r:.80}")
    if not isinstance(model.get("recipe"), (dict, type(None))):
        raise McutrainError(f"'model.recipe' must be an object or null, got {type(model['recipe']).__name__}")


def _key(text: str, lo: int, hi: int, where: str) -> int:
    if not str(text).isdigit() or not lo <= int(text) <= hi:
        raise McutrainError(f"'{where}' key {text!r} must be an integer {lo}..{hi}")
    return int(text)


def _ratios(row: dict, where: str) -> dict[float, float]:
    return {_ratio(r, where): _delta(v, f"{where}[{r}]") for r, v in row.items()}


def _ratio(text: str, where: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        ratio = None
    if ratio not in ALLOWED_RATIOS:
        raise McutrainError(f"{where}: ratio {text!r} is not one of {ALLOWED_RATIOS}")
    return ratio


def _error(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise McutrainError(f"{where} must be a standard error in [0, 1], got {brief(v)}")
    return float(v)


def _accuracy(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise McutrainError(f"{where} must be an accuracy in [0, 1], got {v!r}")
    return float(v)


def _delta(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not -1 <= v <= 1:
        raise McutrainError(f"{where} must be an accuracy difference in [-1, 1], got {v!r}")
    return float(v)


# ---------------------------------------------------------------------------------------------- identity


def check_analysis_model(contrib: Contrib, qmodel, model_label: str, weights: bool = True,
                         source: str = "the contribution analysis") -> None:
    """Refuse an analysis made for another model, naming both (one line).

    ``qmodel`` is a zoo int8 model or an imported graph model (``train.model_kind``). The identity
    compared is the model's CONTENT identity (``model_kind.content_identity``: for a zoo model
    ``io.identity.qmodel_identity``, architecture name + every tensor + every quantization parameter;
    for a graph the same of its file's contents), recorded by ``analyze`` as
    ``model.identity``. Decision: not the file's sha256, because a file rewritten with another
    header (container format, provenance notes) holds the same model and its analysis stays valid;
    any changed weight, scale or zero point is another model. Documents from before identities
    (``model.sha256`` only) are compared by the file's bytes when ``model_label`` is a file.
    ``weights=False`` (a zoo name or architecture: random weights, only memory matters) compares
    the architecture alone. ``source`` names the analysis in the message (its file)."""
    from mcutrain.train import model_kind as mk  # the search package loads before the trainer

    made_for = contrib.doc.get("model") if isinstance(contrib.doc.get("model"), dict) else {}
    where = f" ({made_for['path']})" if isinstance(made_for.get("path"), str) else ""
    arch = mk.arch(qmodel)
    if arch != contrib.arch:
        kind = "an imported graph" if mk.is_graph(qmodel) else f"a {arch} int8 model"
        raise McutrainError(f"{source} was made for a {contrib.arch} model{where}, not for {model_label} "
                            f"({arch}): analyse {kind} with `mcutrain analyze`")
    if not weights:
        return
    recorded = made_for.get("identity")
    if isinstance(recorded, str):
        mine = mk.content_identity(qmodel)
        theirs, ours = short(recorded), short(mine)
    elif isinstance(made_for.get("sha256"), str) and Path(model_label).is_file():
        recorded, mine = made_for["sha256"], file_sha256(model_label)
        theirs, ours = f"file sha256 {recorded[:12]}", f"file sha256 {mine[:12]}"
    else:  # a hand-made document naming no model: only the architecture could be checked
        return
    if mine != recorded:
        raise McutrainError(f"{source} was made for another model: {theirs}{where}, not {model_label} ({ours}); "
                            f"run `mcutrain analyze {model_label}` for this model")
