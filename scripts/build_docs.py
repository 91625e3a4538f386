"""Reference docs of mcutrain's Python API: HTML from the docstrings (pdoc, pinned in requirements.lock),
with docs/api.md and the tutorial (docs/tutorial.md, generated from examples/tutorial.py) beside them.

    python scripts/build_docs.py build/docs      # what `make docs` runs
    python scripts/build_docs.py --check         # undocumented public names, broken references
    python scripts/build_docs.py --tutorial-page # docs/tutorial.md from examples/tutorial.py

Why a script and not pdoc's command line: the documented modules are an explicit list (the public
surface, not every internal module), the two Markdown pages are rendered with the same converter pdoc
uses (markdown2), and the checks that CI runs (``tests/api/test_docs.py``) live next to the build:

* every public name of a documented module (in its ``__all__``, or not starting with ``_``) has a
  docstring: modules, classes, functions, methods, properties, module-level constants;
* every cross-reference resolves: a name in single backticks (`mcutrain.compile`, `Result.to_json`)
  is a reference; literal code is written in double backticks (``--lr auto``) and is not checked.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["mcutrain", "mcutrain.api", "mcutrain.api.results", "mcutrain.api.defaults", "mcutrain.api.arguments",
           "mcutrain.api.models", "mcutrain.api.imports", "mcutrain.api.data", "mcutrain.api.training",
           "mcutrain.api.scheme_plans", "mcutrain.api.analysis", "mcutrain.api.compiling", "mcutrain.api.running",
           "mcutrain.api.exporting", "mcutrain.api.demo", "mcutrain.errors"]
PAGES = {"api": ROOT / "docs" / "api.md", "tutorial": ROOT / "docs" / "tutorial.md"}
TUTORIAL = ROOT / "examples" / "tutorial.py"
# `name` alone, not ``name``: a reference. The name: dotted identifiers, optionally called "()".
REFERENCE = re.compile(r"(?<![`\w])`([A-Za-z_][\w.]*)(?:\(\))?`(?!`)")


def load_public_names() -> None:
    """``mcutrain`` loads its public names on first use; pdoc reads a module's namespace, so load them."""
    import mcutrain

    for name in mcutrain.__all__:
        getattr(mcutrain, name)


def tutorial_markdown() -> str:
    """docs/tutorial.md: the tutorial's docstring as prose, then the script itself."""
    source = TUTORIAL.read_text()
    doc = source.split('"""')[1].strip()
    title, _, body = doc.partition("\n\n")
    return (f"# Tutorial: {title.removeprefix('mcutrain tutorial: ')}\n\n"
            f"<!-- generated from examples/tutorial.py by scripts/build_docs.py: edit the script -->\n\n"
            f"{body}\n\nThe script, `examples/tutorial.py`:\n\n```python\n{source.rstrip()}\n```\n")


def build(out: Path) -> list[Path]:
    """Write the HTML pages into ``out``; returns the files written."""
    import markdown2
    import pdoc
    import pdoc.render

    from mcutrain.io.atomic import atomic_write_text

    load_public_names()
    pdoc.render.configure(docformat="restructuredtext", footer_text="mcutrain API reference",
                          show_source=False)
    pdoc.pdoc(*MODULES, output_directory=out)
    written = sorted(out.rglob("*.html"))
    for name, path in PAGES.items():
        text = tutorial_markdown() if name == "tutorial" else path.read_text()
        html = markdown2.markdown(text, extras=["fenced-code-blocks", "tables", "header-ids"])
        page = out / f"{name}.html"
        atomic_write_text(page, f"<!doctype html><meta charset='utf-8'><title>mcutrain: {name}</title>\n{html}")
        written.append(page)
    return written


def problems() -> list[str]:
    """Undocumented public names and references that resolve to nothing, one line each."""
    import pdoc.doc

    load_public_names()
    # Fresh documentation objects (Module.from_name caches them per name: a check after an edit of a
    # docstring in the same process must see the edit).
    modules = {name: pdoc.doc.Module(importlib.import_module(name)) for name in MODULES}
    found: list[str] = []
    for module in modules.values():
        for doc in _public(module):
            if not (doc.docstring or "").strip():
                found.append(f"{doc.fullname}: no docstring")
            for ref in REFERENCE.findall(doc.docstring or ""):
                if not _resolves(ref, module, doc, modules):
                    found.append(f"{doc.fullname}: `{ref}` refers to nothing documented")
    return found


def _public(module) -> list:
    """The module and every public member it documents: its ``__all__`` (else its own names not
    starting with ``_``), and the methods and properties of its classes (their fields are described
    in the class docstring)."""
    import pdoc.doc

    exported = getattr(module.obj, "__all__", None)
    out = [module]
    for doc in module.members.values():
        mine = doc.name in exported if exported is not None else doc.taken_from[0] == module.modulename
        if doc.name.startswith("_") or not mine:
            continue
        out.append(doc)
        if isinstance(doc, pdoc.doc.Class):
            out.extend(m for m in doc.own_members
                       if not m.name.startswith("_") and not isinstance(m, pdoc.doc.Variable))
    return out


def _resolves(ref: str, module, doc, modules: dict) -> bool:
    if ref in modules:
        return True
    scopes = [module]
    if "." in ref:
        head, _, rest = ref.rpartition(".")
        while head:
            if head in modules and modules[head].get(ref[len(head) + 1:]) is not None:
                return True
            head = head.rpartition(".")[0]
    owner = doc.qualname if doc.kind == "class" else doc.qualname.rpartition(".")[0]
    candidates = [ref] + ([f"{owner}.{ref}"] if owner else [])
    origin = modules.get(doc.taken_from[0])  # a re-exported name's references read in its own module
    for scope in scopes + [origin or module, modules["mcutrain"], modules["mcutrain.api"]]:
        if any(scope.get(c) is not None for c in candidates):
            return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "build" / "docs"), help="output folder")
    parser.add_argument("--check", action="store_true", help="only check: undocumented names, broken references")
    parser.add_argument("--tutorial-page", action="store_true", help="only rewrite docs/tutorial.md from the script")
    args = parser.parse_args()
    if args.tutorial_page:
        from mcutrain.io.atomic import atomic_write_text

        atomic_write_text(PAGES["tutorial"], tutorial_markdown())
        return 0
    found = problems()
    for line in found:
        print(f"docs: {line}", file=sys.stderr)
    if found or args.check:
        return 1 if found else 0
    files = build(Path(args.out))
    print(f"wrote {len(files)} pages to {args.out} (start at {Path(args.out) / 'mcutrain.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
