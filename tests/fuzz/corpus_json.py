"""Hostile JSON a user hands mcutrain: sparse-update schemes, architectures, contribution analyses,
and the budget strings of ``search``.

Who reads what (mcutrain/cli/): a scheme file is ``--scheme`` of ``finetune`` / ``compile`` /
``analyze`` and the argument of ``scheme show|check``; an architecture file is ``--model`` of
``pretrain`` / ``zoo`` / ``scheme`` and MODEL of ``compile`` / ``search``; a contribution analysis is
``--contrib`` of ``search``; budgets are ``--budget`` / ``--flash-budget`` of ``search``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.fuzz.assets import Assets, contrib_doc
from tests.fuzz.harness import Case, fresh_dir

HUGE_BYTES = 30 * 2**20
"""Size of the "huge file" cases: far above any JSON file mcutrain writes (the largest are ~100 KB)."""

NAN, INF = float("nan"), float("inf")

SEARCH_SECONDS = 15.0
"""Per-case limit of the ``search`` cases: a wrongly accepted analysis runs the smallest search (~3 s
alone, more on a loaded machine), which must show as "accepted", not as a hang."""


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _write(path: Path, content: Any) -> None:
    """``content``: a document (written as JSON, NaN/Infinity literals allowed), raw ``bytes`` or a ``str``."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))


def _literal_names(content: Any, names: tuple[str, ...]) -> tuple[str, ...]:
    """A document holding NaN or Infinity is not standard JSON: refusing it while parsing ("NaN is not
    a number JSON allows") names the problem as well as naming the field would."""
    if isinstance(content, (bytes, str)):
        return names
    text = json.dumps(content)
    return names + ("JSON allows",) if ("NaN" in text or "Infinity" in text) else names


def _with(doc: dict, *path, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def _without(doc: dict, key: str) -> dict:
    doc = copy.deepcopy(doc)
    doc.pop(key)
    return doc


def _common(doc: dict, nest_key: str) -> list[tuple[str, Any, tuple[str, ...]]]:
    """Cases every JSON input shares: not JSON, wrong top level, header, unknown keys, nesting, size."""
    text = json.dumps(doc)
    return [
        ("not JSON", "this is not JSON {", ("json",)),
        ("empty file", "", ("json", "empty")),
        ("not UTF-8", b"\xff\xfe\x00{" + bytes(range(128, 255)), ("json", "utf")),
        ("UTF-8 with a byte-order mark", "\ufeff" + text, ("json", "bom")),
        ("top level is a list", [doc], ("object", "list", "format")),
        ("top level is null", None, ("object", "none", "null", "format")),
        ("top level is a number", 3, ("object", "int", "format")),
        ("format wrong", _with(doc, "format", value="something-else"), ("format",)),
        ("version 99", _with(doc, "version", value=99), ("version",)),  # contrib.json reads 1 and 2
        ("version true", _with(doc, "version", value=True), ("version",)),
        ("version '1' (a string)", _with(doc, "version", value="1"), ("version",)),
        ("unknown top-level key", _with(doc, "surprise", value=1), ("surprise", "unknown")),
        ("200000 levels of nesting", text[:-1] + f', "{nest_key}": ' + _deep(200_000) + "}", ("deep", "nest")),
        ("200000 levels of nesting (whole file)", _deep(200_000), ("deep", "nest")),
        ("a 30 MB file of whitespace", " " * HUGE_BYTES + text, ("large", "size", "limit", "bytes")),
    ]


# ------------------------------------------------------------------------------------------- schemes


def scheme_edits(doc: dict) -> list[tuple[str, Any, tuple[str, ...]]]:
    edits = _common(doc, "description")
    edits.append(("a 30 MB description", _with(doc, "description", value="x" * HUGE_BYTES),
                  ("large", "size", "limit", "bytes", "description")))
    bias_values = [("-1", -1), ("0", 0), ("10^30", 10**30), ("1e308", 1e308), ("NaN", NAN), ("Infinity", INF),
                   ("'4' (a string)", "4"), ("true", True), ("4.5", 4.5), ("null", None)]
    edits += [(f"bias last {n}", _with(doc, "bias", value={"last": v}), ("bias", "last")) for n, v in bias_values]
    edits += [
        ("bias: a list of layers 10^9", _with(doc, "bias", value=[10**9]), ("bias",)),
        ("bias: an unknown key", _with(doc, "bias", value={"last": 4, "first": 1}), ("first", "unknown", "bias")),
        ("bias: a string", _with(doc, "bias", value="all"), ("bias",)),
    ]
    weight_rows = [("layer 99999", {"layer": 99999, "ratio": 1.0}), ("layer -1", {"layer": -1, "ratio": 1.0}),
                   ("layer 1e308", {"layer": 1e308, "ratio": 1.0}), ("layer NaN", {"layer": NAN, "ratio": 1.0}),
                   ("layer '14'", {"layer": "14", "ratio": 1.0}), ("ratio 0", {"layer": 14, "ratio": 0}),
                   ("ratio -1", {"layer": 14, "ratio": -1}), ("ratio 2", {"layer": 14, "ratio": 2}),
                   ("ratio NaN", {"layer": 14, "ratio": NAN}), ("ratio Infinity", {"layer": 14, "ratio": INF}),
                   ("ratio 1e-300", {"layer": 14, "ratio": 1e-300}), ("ratio '1'", {"layer": 14, "ratio": "1"}),
                   ("an unknown key", {"layer": 14, "ratio": 1.0, "lr": 5}), ("layer missing", {"ratio": 1.0})]
    edits += [(f"weights: {n}", _with(doc, "weights", value=[row]), ("weight", "layer", "ratio", "lr")) for n, row in weight_rows]
    edits += [
        ("weights: not a list", _with(doc, "weights", value={"14": 1.0}), ("weights",)),
        ("weights: the same layer 100000 times", _with(doc, "weights", value=[{"layer": 14, "ratio": 1.0}] * 100_000),
         ("weights", "layer", "twice", "duplicate", "more than once")),
        ("model: another zoo net", _with(doc, "model", value="mcunet-5fps"), ("model", "mcunet-5fps")),
        ("model: a number", _with(doc, "model", value=7), ("model",)),
        ("name: a number", _with(doc, "name", value=7), ("name",)),
        ("name with a newline", _with(doc, "name", value="a\nb"), ("name",)),
        ("name of 100000 characters", _with(doc, "name", value="n" * 100_000), ("name",)),
        ("bias missing", _without(doc, "bias"), ("bias",)),
    ]
    return edits


C_COMMENT_ESCAPE = (
    # Closes the generated C's title comment (/* model.c: <model> @<res>, <scheme name>), adds a
    # file-scope asm constructor that runs ``touch SENTINEL`` when the library is loaded (numeric
    # local labels, so it assembles twice: model.c includes model.h, both carry the title), reopens.
    'x */ __asm__(".pushsection .text\\n1: lea 2f(%rip), %rdi\\n jmp system@PLT\\n2: .asciz '
    '\\"touch {sentinel}\\"\\n.popsection\\n.pushsection .init_array, \\"aw\\"\\n.quad 1b\\n.popsection"); /*')


def injection_case(assets: Assets, root: Path, doc: dict) -> Case:
    """A scheme whose name escapes the generated C's comment: ``compile --target host`` must refuse it
    (today it builds a library that runs the code when ``mcutrain run`` loads it)."""
    d = fresh_dir(root, "scheme-injection")
    sentinel = d / "PAYLOAD_RAN"
    path = d / "scheme.json"
    path.write_text(json.dumps(_with(doc, "name", value=C_COMMENT_ESCAPE.format(sentinel=sentinel))))
    out = d / "out"
    out.mkdir()
    return Case("scheme-json", "name closing the C comment: code in the generated program [compile --target host]",
                ["compile", str(assets.int8), "--scheme", str(path), "--target", "host", "--out", str(out / "c")],
                out_dir=out, names=("name",), sentinel=sentinel, timeout=120.0)


def scheme_cases(assets: Assets, root: Path) -> list[Case]:
    doc = json.loads(assets.scheme.read_text())
    cases = [injection_case(assets, root, doc)]
    for i, (name, content, names) in enumerate(scheme_edits(doc)):
        d = fresh_dir(root, "scheme")
        path = d / "scheme.json"
        _write(path, content)
        out = d / "out"
        out.mkdir()
        argvs = {"scheme check": ["scheme", "check", str(path), "--model", "tiny"],
                 "compile": ["compile", str(assets.int8), "--scheme", str(path)],
                 "finetune": ["finetune", str(assets.int8), "--data", f"npz:{assets.npz}", "--scheme", str(path),
                              "--out", str(out / "m.safetensors"), "--epochs", "1", "--quiet"]}
        for command in ("scheme check", ("compile", "finetune")[i % 2]):
            argv = argvs[command]
            cases.append(Case("scheme-json", f"{name} [{command}]", argv, out_dir=out,
                              names=_literal_names(content, names)))
    return cases


# ------------------------------------------------------------------------------------- architectures


def arch_edits(doc: dict) -> list[tuple[str, Any, tuple[str, ...]]]:
    edits = _common(doc, "name")
    block = doc["blocks"][0]
    chain = {"in_ch": 8, "mid_ch": 16, "out_ch": 8, "kernel": 3, "stride": 1}
    edits += [
        ("100000 blocks", _with(doc, "blocks", value=[block] + [chain] * 99_999), ("blocks",)),
        ("stem_ch 10^7", _with(_with(doc, "stem_ch", value=10**7), "blocks", 0, "in_ch", value=10**7), ("stem_ch", "channels")),
        ("out_ch 10^12", _with(_with(doc, "blocks", 4, "out_ch", value=10**12), "blocks", 4, "in_ch", value=16), ("out_ch", "channels")),
        ("mid_ch 10^7", _with(doc, "blocks", 1, "mid_ch", value=10**7), ("mid_ch", "channels")),
        ("default_resolution 10^9", _with(doc, "default_resolution", value=10**9), ("resolution",)),
        ("default_resolution 0", _with(doc, "default_resolution", value=0), ("resolution",)),
        ("default_resolution 1e308", _with(doc, "default_resolution", value=1e308), ("resolution",)),
        ("default_resolution NaN", _with(doc, "default_resolution", value=NAN), ("resolution",)),
        ("default_resolution Infinity", _with(doc, "default_resolution", value=INF), ("resolution",)),
        ("default_resolution true", _with(doc, "default_resolution", value=True), ("resolution",)),
        ("stem_kernel 10^9", _with(doc, "stem_kernel", value=10**9), ("stem_kernel", "kernel")),
        ("stem_kernel 0", _with(doc, "stem_kernel", value=0), ("stem_kernel", "kernel")),
        ("stem_stride 0", _with(doc, "stem_stride", value=0), ("stem_stride", "stride")),
        ("stem_stride 10^6", _with(doc, "stem_stride", value=10**6), ("stem_stride", "stride")),
        ("in_ch 0", _with(doc, "in_ch", value=0), ("in_ch",)),
        ("in_ch 10^6", _with(doc, "in_ch", value=10**6), ("in_ch",)),
        ("block kernel 0", _with(doc, "blocks", 2, "kernel", value=0), ("kernel",)),
        ("block kernel 4 (even)", _with(doc, "blocks", 2, "kernel", value=4), ("kernel",)),
        ("block kernel 99", _with(doc, "blocks", 2, "kernel", value=99), ("kernel",)),
        ("block kernel -3", _with(doc, "blocks", 2, "kernel", value=-3), ("kernel",)),
        ("block stride 0", _with(doc, "blocks", 2, "stride", value=0), ("stride",)),
        ("block stride 3", _with(doc, "blocks", 2, "stride", value=3), ("stride",)),
        ("block stride -1", _with(doc, "blocks", 2, "stride", value=-1), ("stride",)),
        ("block out_ch NaN", _with(doc, "blocks", 2, "out_ch", value=NAN), ("out_ch",)),
        ("block out_ch 8.5", _with(doc, "blocks", 2, "out_ch", value=8.5), ("out_ch",)),
        ("block out_ch '8'", _with(doc, "blocks", 2, "out_ch", value="8"), ("out_ch",)),
        ("block out_ch true", _with(doc, "blocks", 2, "out_ch", value=True), ("out_ch",)),
        ("block mid_ch 0", _with(doc, "blocks", 1, "mid_ch", value=0), ("mid_ch",)),
        ("block mid_ch -8", _with(doc, "blocks", 1, "mid_ch", value=-8), ("mid_ch",)),
        ("block: an unknown key", _with(doc, "blocks", 1, "se", value=True), ("se", "unknown")),
        ("block: a key missing", _with(doc, "blocks", 1, value={"in_ch": 8, "out_ch": 8}), ("kernel", "missing")),
        ("blocks: empty", _with(doc, "blocks", value=[]), ("blocks",)),
        ("blocks: a dict", _with(doc, "blocks", value={"0": block}), ("blocks",)),
        ("blocks: a list of numbers", _with(doc, "blocks", value=[1, 2]), ("blocks",)),
        ("name: empty", _with(doc, "name", value=""), ("name",)),
        ("name: a path", _with(doc, "name", value="../../etc/passwd"), ("name",)),
        ("name: 100000 characters", _with(doc, "name", value="n" * 100_000), ("name",)),
        ("name: a zoo name with other layers", _with(doc, "name", value="mcunet-5fps"), ("name", "zoo")),
        ("name: a number", _with(doc, "name", value=12), ("name",)),
        ("name with a newline", _with(doc, "name", value="my\nnet"), ("name",)),
    ]
    return edits


def arch_cases(assets: Assets, root: Path) -> list[Case]:
    doc = json.loads(assets.arch.read_text())
    doc["name"] = "fuzz-net"
    cases = []
    for i, (name, content, names) in enumerate(arch_edits(doc)):
        d = fresh_dir(root, "arch")
        path = d / "arch.json"
        _write(path, content)
        out = d / "out"
        out.mkdir()
        argvs = {"zoo": ["zoo", "--model", str(path)],
                 "compile": ["compile", str(path), "--scheme", "last-k:2"],
                 "pretrain": ["pretrain", "--model", str(path), "--data", f"npz:{assets.npz}", "--out",
                              str(out / "f.safetensors"), "--epochs", "1", "--batch-size", "8", "--quiet"]}
        for command in ("compile", ("zoo", "pretrain")[i % 2]):
            argv = argvs[command]
            cases.append(Case("arch-json", f"{name} [{command}]", argv, out_dir=out,
                              names=_literal_names(content, names)))
    return cases


# ------------------------------------------------------------------------------ contribution analyses


def contrib_edits(doc: dict, n_convs: int) -> list[tuple[str, Any, tuple[str, ...]]]:
    edits = _common(doc, "note")
    for n, v in [("7.5", 7.5), ("-1", -1), ("NaN", NAN), ("Infinity", INF), ("'0.5'", "0.5"), ("true", True)]:
        edits.append((f"baseline {n}", _with(doc, "baseline", value=v), ("baseline",)))
    for n, v in [("1e308", 1e308), ("NaN", NAN), ("-Infinity", -INF), ("7.5", 7.5), ("'0.1'", "0.1")]:
        edits.append((f"bias value {n}", _with(doc, "bias", "1", value=v), ("bias",)))
    last = str(n_convs - 1)
    edits += [
        ("bias key 999", _with(doc, "bias", "999", value=0.01), ("bias", "999")),
        ("bias key -1", _with(doc, "bias", "-1", value=0.01), ("bias", "-1")),
        ("bias key 'abc'", _with(doc, "bias", "abc", value=0.01), ("bias", "abc")),
        ("bias: a list", _with(doc, "bias", value=[0.1, 0.2]), ("bias",)),
        ("weight layer 999", _with(doc, "weight", "999", value={"1.0": 0.01}), ("weight", "999")),
        ("weight ratio '0.3'", _with(doc, "weight", last, value={"0.3": 0.01}), ("ratio", "0.3")),
        ("weight ratio 'NaN'", _with(doc, "weight", last, value={"NaN": 0.01}), ("ratio", "nan")),
        ("weight value NaN", _with(doc, "weight", last, "1.0", value=NAN), ("weight",)),
        ("weight value 1e308", _with(doc, "weight", last, "1.0", value=1e308), ("weight",)),
        ("weight without its bias run", _with(doc, "bias", value={"1": 0.01}), ("bias",)),
        ("model: n_convs 10^9", _with(doc, "model", "n_convs", value=10**9), ("n_convs", "conv", "tiny")),
        ("model: n_convs 0", _with(doc, "model", "n_convs", value=0), ("n_convs", "conv")),
        ("model: n_convs 20 (the model has 15)", _with(doc, "model", "n_convs", value=20), ("n_convs", "conv", "tiny")),
        ("model: n_convs 'x'", _with(doc, "model", "n_convs", value="x"), ("n_convs",)),
        ("model: arch of another model", _with(doc, "model", "arch", value="mcunet-5fps"), ("mcunet-5fps",)),
        ("model: resolution 10^9", _with(doc, "model", "resolution", value=10**9), ("resolution",)),
        ("model: resolution 0", _with(doc, "model", "resolution", value=0), ("resolution",)),
        ("model: resolution -16", _with(doc, "model", "resolution", value=-16), ("resolution",)),
        ("model: resolution NaN", _with(doc, "model", "resolution", value=NAN), ("resolution",)),
        ("model: resolution '16'", _with(doc, "model", "resolution", value="16"), ("resolution",)),
        ("model: resolution true", _with(doc, "model", "resolution", value=True), ("resolution",)),
        ("model: a list", _with(doc, "model", value=[1]), ("model",)),
        ("data: num_classes 10^9", _with(doc, "data", "num_classes", value=10**9), ("num_classes", "classes")),
        ("data: num_classes 0", _with(doc, "data", "num_classes", value=0), ("num_classes", "classes")),
        ("data: num_classes -5", _with(doc, "data", "num_classes", value=-5), ("num_classes", "classes")),
        ("data: num_classes 1.5", _with(doc, "data", "num_classes", value=1.5), ("num_classes", "classes")),
        ("data: num_classes '3x'", _with(doc, "data", "num_classes", value="3x"), ("num_classes", "classes")),
        ("data: val_used -1", _with(doc, "data", "val_used", value=-1), ("val_used",)),
        ("data: val_used NaN", _with(doc, "data", "val_used", value=NAN), ("val_used",)),
        ("data: val_used 0", _with(doc, "data", "val_used", value=0), ("val_used",)),
        ("data: a string", _with(doc, "data", value="digits"), ("data",)),
    ]
    return edits


def contrib_cases(assets: Assets, root: Path) -> list[Case]:
    doc = contrib_doc(assets.n_convs)
    cases = []
    for name, content, names in contrib_edits(doc, assets.n_convs):
        d = fresh_dir(root, "contrib")
        path = d / "contrib.json"
        _write(path, content)
        out = d / "out"
        out.mkdir()
        cases.append(Case("contrib-json", f"{name} [search]", _search_argv(assets, path, out), out_dir=out,
                          names=_literal_names(content, names), timeout=SEARCH_SECONDS))
    return cases


def _search_argv(assets: Assets, contrib: Path, out: Path, *extra: str) -> list[str]:
    return ["search", str(assets.int8), "--contrib", str(contrib), "--out", str(out / "scheme.json"),
            "--population", "2", "--generations", "1", "--quiet", *(extra or ("--budget", "1MB"))]


# ----------------------------------------------------------------------------------------- budgets

BUDGETS = ["-1", "0", "-0KB", "1e309", "nan", "inf", "-inf", "NaN KB", "1KB1", "",
           " ", "0x10", "1.5.5MB", "1e-9KB", "9" * 5000,
           "10**9", "1 parsec", "200KB\n200KB"]


def budget_cases(assets: Assets, root: Path) -> list[Case]:
    cases = []
    for flag in ("--budget", "--flash-budget"):
        for text in BUDGETS if flag == "--budget" else BUDGETS[:12]:
            d = fresh_dir(root, "budget")
            out = d / "out"
            out.mkdir()
            extra = [flag, text] if flag == "--budget" else ["--budget", "1MB", flag, text]
            cases.append(Case("budget", f"{flag} {text[:40]!r}", _search_argv(assets, assets.contrib, out, *extra),
                              out_dir=out, names=(flag,), timeout=SEARCH_SECONDS))
    return cases

