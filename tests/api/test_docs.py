"""The API reference builds, documents every public name and has no broken cross-reference
(``scripts/build_docs.py``, run by ``make docs``); docs/tutorial.md is the tutorial as it is."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build_docs():
    spec = importlib.util.spec_from_file_location("build_docs", ROOT / "scripts" / "build_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_docs"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def docs():
    pytest.importorskip("pdoc", reason="pdoc is installed by `make` from requirements.lock")
    return build_docs()


def test_every_public_name_is_documented_and_every_reference_resolves(docs):
    assert docs.problems() == []


def test_the_check_finds_an_undocumented_name_and_a_broken_reference(docs, monkeypatch):
    """The check has teeth: a public function without a docstring and a reference to nothing are found."""
    from mcutrain.api import compiling

    monkeypatch.setattr(compiling.compile, "__doc__", None)
    monkeypatch.setattr(compiling.generate_c, "__doc__", "Compile; see `mcutrain.no_such_function`.")
    found = docs.problems()
    assert "mcutrain.compile: no docstring" in found
    assert "mcutrain.generate_c: `mcutrain.no_such_function` refers to nothing documented" in found


def test_the_reference_builds(docs, tmp_path):
    files = docs.build(tmp_path)
    names = {f.relative_to(tmp_path).as_posix() for f in files}
    assert {"mcutrain.html", "mcutrain/api.html", "mcutrain/api/compiling.html", "api.html", "tutorial.html"} <= names
    page = (tmp_path / "mcutrain.html").read_text()
    assert "load_model" in page and "plot_timeline" in (tmp_path / "mcutrain" / "api" / "compiling.html").read_text()
    assert "search_scheme" in (tmp_path / "tutorial.html").read_text()


def test_tutorial_page_is_generated_from_the_script(docs):
    assert (ROOT / "docs" / "tutorial.md").read_text() == docs.tutorial_markdown(), \
        "docs/tutorial.md is stale: python scripts/build_docs.py --tutorial-page"
