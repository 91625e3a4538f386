"""One source of defaults: every flag of every command has the default of the API function behind it.

The CLI reads its defaults from the API signatures (``mcutrain.api.defaults``); this test walks every
command's parser, maps each flag to the API keyword of the same name and compares the defaults, so a
default changed on one side only fails here. Every command is thin, ``analyze``, ``search`` and
``demo`` included.
"""

from __future__ import annotations

import argparse
import importlib

import pytest

from mcutrain import api
from mcutrain.api.defaults import defaults

# command (and sub-command) -> the API function behind it
COMMANDS = {
    ("zoo",): api.zoo,
    ("data", "show"): api.dataset,
    ("pretrain",): api.pretrain,
    ("eval",): api.evaluate,
    ("quantize",): api.quantize,
    ("import",): api.import_model,
    ("scheme", "list"): api.schemes,
    ("scheme", "show"): api.scheme,
    ("finetune",): api.finetune,
    ("compile",): api.compile,
    ("run",): api.run,
    ("export",): api.export,
    ("analyze",): api.analyze,
    ("search",): api.search_scheme,
    ("demo",): api.run_demo,
}
NOT_API = {"help", "json", "threads", "func", "parser", "version"}  # output and process options
# Positional arguments and required flags have no default: the API takes them as its leading parameters.
# Where a flag's dest is not the API keyword, the rename is listed (none today: names are the same).
RENAMED: dict[str, str] = {}
EXPECTED_THIN = 109  # defaults compared (every command thin, analyze, search and demo included)


def parser_of(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcutrain")
    subparsers = parser.add_subparsers(dest="command")
    importlib.import_module(f"mcutrain.cli.cmd_{path[0]}").register(subparsers)
    chosen = subparsers.choices[path[0]]
    for name in path[1:]:
        sub = next(a for a in chosen._actions if isinstance(a, argparse._SubParsersAction))
        chosen = sub.choices[name]
    return chosen


def flag_defaults(parser: argparse.ArgumentParser) -> dict[str, tuple[object, bool]]:
    """{dest: (default, required-or-positional)} of every flag that configures the work."""
    flags = {}
    for action in parser._actions:
        if action.dest in NOT_API or isinstance(action, argparse._SubParsersAction):
            continue
        if action.dest in flags:  # --qas / --no-qas share one dest: the first declares the default
            continue
        flags[action.dest] = (action.default, action.required or not action.option_strings)
    return flags


def compare(path: tuple[str, ...], function) -> int:
    """The number of defaults compared; asserts each flag has its API keyword with the same default."""
    import inspect

    params = inspect.signature(function).parameters
    api_defaults = defaults(function)
    checked = 0
    for dest, (default, required) in flag_defaults(parser_of(path)).items():
        name = RENAMED.get(dest, dest)
        assert name in params, f"mcutrain {' '.join(path)}: flag {dest!r} has no keyword in {function.__name__}"
        if required:
            assert name not in api_defaults, f"{function.__name__}({name}) has a default; the flag is required"
            continue
        assert name in api_defaults, f"{function.__name__}({name}) has no default; --{dest} has {default!r}"
        assert default == api_defaults[name], (f"mcutrain {' '.join(path)} --{dest} defaults to {default!r}, "
                                               f"{function.__name__}({name}=...) to {api_defaults[name]!r}")
        assert type(default) is type(api_defaults[name])
        checked += 1
    return checked


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_each_cli_default_is_the_api_default(path):
    assert compare(path, COMMANDS[path]) >= 1


def test_count_of_defaults_checked():
    """The number reported in the closing note (108); fewer means a flag lost its check."""
    total = sum(compare(path, function) for path, function in COMMANDS.items())
    print(f"\n{total} CLI defaults checked equal to the API's")
    assert total >= EXPECTED_THIN


def test_api_defaults_equal_the_internal_configs():
    """Where the internals keep a config dataclass, its defaults are the API's too."""
    from dataclasses import fields

    from mcutrain.codegen.firmware import STM32F746
    from mcutrain.demo import DemoConfig
    from mcutrain.search.contrib import AnalysisConfig
    from mcutrain.search.evolve import SearchConfig
    from mcutrain.train.finetune import FinetuneConfig
    from mcutrain.train.pretrain import PretrainConfig

    for config, function in ((PretrainConfig, api.pretrain), (FinetuneConfig, api.finetune)):
        d = defaults(function)
        for f in fields(config):
            if f.name in d:
                assert d[f.name] == f.default, f"{config.__name__}.{f.name}"
    demo = defaults(api.run_demo)
    renamed = {"sram": "sram_budget", "flash": "flash_budget"}
    config = DemoConfig()
    for name, value in demo.items():
        if hasattr(config, renamed.get(name, name)):
            assert getattr(config, renamed.get(name, name)) == value, f"DemoConfig.{name}"
    search, config = defaults(api.search_scheme), SearchConfig(sram_budget=1)
    assert all(search[k] == getattr(config, k) for k in ("population", "generations", "seed", "noise_z"))
    analysis, config = defaults(api.analyze), AnalysisConfig("", "", "")
    for name in ("workers", "seed", "lr", "momentum", "batch_size", "optimizer", "qas", "update_rule"):
        assert analysis[name] == getattr(config, name), f"AnalysisConfig.{name}"
    assert not defaults(api.pretrain)["no_augment"] and PretrainConfig("", "", "").augment
    # None: the target core's typical part (codegen.cores); the M7's is the STM32F746
    assert defaults(api.compile)["sram_kb"] is None and defaults(api.compile)["flash_kb"] is None
    from mcutrain.api.compiling import _memory_map

    assert _memory_map("cortex-m7", None, None) == STM32F746
    assert _memory_map("cortex-m4", 200, None).ram_bytes == 200 * 1024

