"""Threads: `--threads N` before or after any command, validated; the default rule (physical cores
of this process, a cgroup quota, a cap); the user's OMP_* settings kept; idle threads sleep."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mcutrain.cli import main as cli_main
from mcutrain.cli import threads

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text", ["0", "-1", "1025", "abc", "1.5", ""])
def test_a_thread_count_outside_1_to_1024_is_refused_with_the_range(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be an integer 1\.\.1024"):
        threads.thread_count(text)


@pytest.mark.parametrize("argv", [["--threads", "0", "zoo"], ["zoo", "--threads", "x"],
                                  ["scheme", "list", "--model", "tiny", "--threads", "2000"]])
def test_the_cli_refuses_a_bad_thread_count_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --threads: must be an integer 1..1024" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, expected", [
    (["zoo", "--json"], None),
    (["--threads", "3", "zoo", "--json"], 3),
    (["zoo", "--threads", "5", "--json"], 5),
    (["--threads", "3", "zoo", "--threads", "4", "--json"], 4),  # the later one wins
    (["scheme", "list", "--model", "tiny", "--threads", "6"], 6),  # after a sub-command too
])
def test_threads_is_accepted_before_and_after_the_command(argv, expected, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(threads, "apply_threads", seen.append)
    assert cli_main.main(argv) == 0
    capsys.readouterr()
    assert seen == [expected]


def test_the_requested_count_is_set_in_torch(monkeypatch):
    before = torch.get_num_threads()
    environ = {"OMP_NUM_THREADS": "1"}
    try:
        assert threads.apply_threads(3, environ) == 3  # --threads beats the environment
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_the_users_omp_num_threads_is_kept_without_threads(monkeypatch):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: pytest.fail("changed the user's setting"))
    assert threads.apply_threads(None, {"OMP_NUM_THREADS": "7"}) is None


def test_the_default_goes_through_the_environment_when_torch_is_not_loaded_yet(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(threads, "default_threads", lambda: 2)
    environ = {}
    assert threads.apply_threads(None, environ) == 2 and environ == {"OMP_NUM_THREADS": "2"}


def test_idle_threads_sleep_unless_the_user_chose_or_torch_is_loaded(monkeypatch):
    environ = {}
    threads.prepare_environment(environ)
    assert environ == {}  # torch is loaded in this process: its OpenMP runtime has read its settings
    monkeypatch.delitem(sys.modules, "torch")
    threads.prepare_environment(environ)
    assert environ == {"OMP_WAIT_POLICY": "passive"}
    for name in threads.WAIT_VARIABLES:
        chosen = {name: "123"}
        threads.prepare_environment(chosen)
        assert chosen == {name: "123"}


def _topology(tmp_path, cores_of_cpu: dict[int, tuple[int, int]]) -> Path:
    for cpu, (package, core) in cores_of_cpu.items():
        folder = tmp_path / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return tmp_path


def test_hyperthreads_of_one_core_count_once(tmp_path):
    # 2 packages x 2 cores x 2 hyperthreads: CPUs 0-3 on package 0, 4-7 on package 1
    topology = _topology(tmp_path, {cpu: (cpu // 4, (cpu // 2) % 2) for cpu in range(8)})
    assert threads.physical_cores(range(8), topology) == 4
    assert threads.physical_cores({0, 1}, topology) == 1  # two siblings
    assert threads.physical_cores({0, 2, 4}, topology) == 3
    assert threads.physical_cores({8, 9}, topology) == 2  # no topology: one core per CPU


@pytest.mark.parametrize("text, limit", [("max 100000", None), ("400000 100000", 4), ("150000 100000", 1),
                                         ("50000 100000", 1), ("garbage", None), ("100 0", None)])
def test_a_cgroup_quota_limits_in_whole_cpus(tmp_path, text, limit):
    (tmp_path / "cpu.max").write_text(text + "\n")
    assert threads.cgroup_cpu_limit(tmp_path / "cpu.max") == limit
    assert threads.cgroup_cpu_limit(tmp_path / "absent") is None


def test_the_default_is_the_smallest_of_cores_quota_and_cap(monkeypatch):
    monkeypatch.setattr(threads, "allowed_cpus", lambda: set(range(64)))
    monkeypatch.setattr(threads, "physical_cores", lambda cpus: len(cpus))
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.default_threads() == threads.THREADS_CAP
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 3)
    assert threads.default_threads() == 3
    monkeypatch.setattr(threads, "allowed_cpus", lambda: {5})
    assert threads.default_threads() == 1


_CHILD = """
import json, os, sys
from mcutrain.cli.main import main
code = main(sys.argv[1:])
import torch
print(json.dumps({"code": code, "threads": torch.get_num_threads(), "wait": os.environ.get("OMP_WAIT_POLICY")}),
      file=sys.stderr)
"""


def _fresh_cli(*argv: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", *threads.WAIT_VARIABLES)}
    out = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True, timeout=300,
                         env={**clean, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT)
    return json.loads(out.stderr.strip().splitlines()[-1])


def test_a_fresh_cli_process_applies_the_rule_and_the_override():
    default = _fresh_cli("zoo", "--json")
    assert default == {"code": 0, "threads": threads.default_threads(), "wait": "passive"}
    assert _fresh_cli("zoo", "--threads", "3")["threads"] == 3
    users = _fresh_cli("zoo", OMP_NUM_THREADS="1", OMP_WAIT_POLICY="active")
    assert users == {"code": 0, "threads": 1, "wait": "active"}
