"""The fuzz harness's verdicts: each way a hostile case can go wrong is recognised (so a green fuzz run
means something), and a clear error passes."""

from __future__ import annotations

import pytest

from tests.fuzz.harness import Case, judge

ERROR = "mcutrain compile: error: model.safetensors: resolution 0 must be 1..4096\n"


def _case(tmp_path, **kw) -> Case:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return Case("test", "a case", ["compile", "model.safetensors"], out_dir=out, **kw)


def _result(code=2, stderr=ERROR, **kw) -> dict:
    return {"code": code, "stderr": stderr, "stdout": "", "seconds": 0.1, "timed_out": False, **kw}


def test_one_error_line_after_progress_notes_is_clear(tmp_path):
    v = judge(_case(tmp_path, names=("resolution",)), _result(stderr="compiling tiny @ 0x0 ...\n" + ERROR))
    assert v.clear and v.cause == "" and v.last_line == ERROR.strip()


@pytest.mark.parametrize("result, cause", [
    (_result(code=0, stderr=""), "accepted"),
    (_result(code=1, stderr="Traceback (most recent call last):\n  File \"x\"\nZeroDivisionError: float division by zero\n"),
     "traceback: ZeroDivisionError"),
    (_result(code=1, stderr="mcutrain compile: something odd\n"), "exit status 1"),
    (_result(stderr=ERROR + "second line of the message\n"), "stderr does not end in exactly one"),
    (_result(stderr=ERROR + ERROR), "stderr does not end in exactly one"),
    (_result(timed_out=True, code=None), "hang"),
    (_result(died="SIGKILL"), "worker died"),
    (_result(seconds=99.0), "slow"),
])
def test_each_failure_is_recognised(tmp_path, result, cause):
    v = judge(_case(tmp_path), result)
    assert not v.clear and v.cause.startswith(cause)


def test_a_message_that_does_not_name_the_problem_fails(tmp_path):
    v = judge(_case(tmp_path, names=("frozen_channels",)), _result())
    assert not v.clear and v.cause.startswith("message does not name the problem")


def test_an_output_file_or_a_leftover_fails(tmp_path):
    case = _case(tmp_path)
    (case.out_dir / ".m.safetensors.x1y2.tmp").write_bytes(b"half")
    v = judge(case, _result())
    assert not v.clear and v.cause.startswith("output written")


def test_a_payload_that_ran_fails_whatever_the_exit(tmp_path):
    sentinel = tmp_path / "PAYLOAD_RAN"
    sentinel.touch()
    v = judge(_case(tmp_path, sentinel=sentinel), _result())
    assert not v.clear and v.cause.startswith("PAYLOAD RAN")
