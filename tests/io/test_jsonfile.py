"""The one safe JSON loader: size and nesting limits before parsing, no non-finite numbers, no duplicate keys."""

from __future__ import annotations

import json
import random

import pytest

from mcutrain.io import jsonfile
from mcutrain.io.jsonfile import JsonLimitError, brief, loads_limited, nesting_depth, read_json_file


class DocError(Exception):
    """Stands in for each file kind's own error class (ModelError, SchemeError, ...)."""


def read(path, parse=lambda doc: doc, **kwargs):
    return read_json_file(path, parse, DocError, **kwargs)


@pytest.mark.parametrize("text, depth", [
    ("3", 0), ('"[[["', 0), ("[]", 1), ('{"a": [1, {"b": []}]}', 4), ('["]", ["\\"]"]]', 2),
    ('[[["x\\\\"]]]', 3),
])
def test_nesting_depth_ignores_brackets_inside_strings(text, depth):
    assert nesting_depth(text) == depth


def test_nesting_depth_agrees_with_the_parser_on_random_documents():
    rng = random.Random(3)

    def make(level):
        if level == 0 or rng.random() < 0.3:
            return rng.choice([1, "a]b", '{"', 2.5, None, "\\"])
        if rng.random() < 0.5:
            return [make(level - 1) for _ in range(rng.randint(0, 3))]
        return {f"k{i}[": make(level - 1) for i in range(rng.randint(0, 3))}

    def depth(value):
        if isinstance(value, list):
            return 1 + max(map(depth, value), default=0)
        if isinstance(value, dict):
            return 1 + max(map(depth, value.values()), default=0)
        return 0

    for _ in range(300):
        doc = make(rng.randint(0, 8))
        assert nesting_depth(json.dumps(doc)) == depth(doc)


def test_deep_nesting_is_refused_before_parsing_with_the_limit(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)  # json.loads would raise RecursionError
    with pytest.raises(DocError) as err:
        read(path)
    assert str(err.value) == (f"{path}: JSON nested 200000 levels deep, over the limit of "
                              f"{jsonfile.MAX_DEPTH} levels")
    ok = tmp_path / "ok.json"
    ok.write_text("[" * jsonfile.MAX_DEPTH + "]" * jsonfile.MAX_DEPTH)
    assert read(ok) is not None


def test_file_size_limit_is_checked_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"a": "x" * 1000}))
    with pytest.raises(DocError, match=r"big.json: larger than the limit of 100 bytes for a JSON file"):
        read(path, max_bytes=100)
    monkeypatch.setattr(jsonfile, "MAX_FILE_BYTES", 500)
    with pytest.raises(DocError, match="larger than the limit of 500 bytes"):
        read(path)
    monkeypatch.setattr(jsonfile, "MAX_FILE_BYTES", 2000)
    assert read(path)["a"] == "x" * 1000


@pytest.mark.parametrize("text, needle", [
    ("[NaN]", "NaN is not a number JSON allows"),
    ('{"a": Infinity}', "Infinity is not a number JSON allows"),
    ("[-Infinity]", "-Infinity is not a number JSON allows"),
    ("[1e999]", "number '1e999' is out of range"),
    ('{"a": 1, "b": 2, "a": 3}', "key 'a' appears twice in one object"),
])
def test_what_no_mcutrain_file_holds_is_refused(tmp_path, text, needle):
    path = tmp_path / "odd.json"
    path.write_text(text)
    with pytest.raises(DocError) as err:
        read(path)
    assert str(err.value) == f"{path}: {needle}"
    with pytest.raises(JsonLimitError):
        loads_limited(text)


@pytest.mark.parametrize("raw, needle", [
    (b"\xff\xfe{}", "not a JSON file"), (b"{not json", "not a JSON file"), (b"1" * 5000, "not a JSON file"),
    (b"", "not a JSON file"),
])
def test_broken_files_give_one_line(tmp_path, raw, needle):
    path = tmp_path / "broken.json"
    path.write_bytes(raw)
    with pytest.raises(DocError, match=needle) as err:
        read(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DocError, match="nope.json: no such thing"):
        read(tmp_path / "nope.json", missing="no such thing")
    with pytest.raises(DocError, match="no such file"):
        read(tmp_path)


def test_parse_errors_are_prefixed_with_the_path(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text("{}")

    def parse(doc):
        raise DocError("field: wrong")

    with pytest.raises(DocError) as err:
        read(path, parse)
    assert str(err.value) == f"{path}: field: wrong"


def test_brief_cuts_long_values_to_one_bounded_line():
    assert brief("abc") == "'abc'"
    long = brief(["x" * 10_000, "line\nbreak"])
    assert len(long) == 80 and long.endswith("...") and "\n" not in long


def test_many_unknown_keys_are_summarised(tmp_path):
    from mcutrain.io.jsonfile import check_keys

    with pytest.raises(DocError) as err:
        check_keys({f"k{i}": 1 for i in range(1000)}, ("a",), "a thing", DocError)
    message = str(err.value)
    assert "and 995 more" in message and len(message) < 300
