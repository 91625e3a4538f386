"""The Ray backend of the contribution analysis: a local Ray instance (2 CPUs) gives exactly the results
of a serial run and of the local process pool, a failed task re-raises its own error, and a bad or
unreachable address is a one-line user error (exit 2), without starting anything."""

import json
import socket
import subprocess
import sys

import pytest

from mcutrain.cli.main import main as cli_main
from mcutrain.errors import McutrainError
from mcutrain.search import AnalysisConfig, analyze, runs_path
from mcutrain.search import ray_backend
from mcutrain.search.runs import RunSpec, load_state

ray = pytest.importorskip("ray", reason="ray is not installed (pinned in requirements.lock)")

# 7 runs in 5 groups: baseline, bias k = 1, 2, and conv 13 / 14 at ratios 1/8 and 1 (each ~0.1 s).
SETTINGS = dict(data="digits", epochs=1, train_subset=300, eval_subset=0, lr=0.1, layers="13,14",
                ratios="1/8,1", bias_grid="1,2")
N_RUNS = 7
TABLES = ("baseline", "bias", "weight", "accuracy", "failed")
TIMINGS = ("seconds", "train_seconds")  # wall times differ between runs; everything else must not


@pytest.fixture(scope="module")
def serial(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "contrib.json"
    return out, analyze(AnalysisConfig(model=model, out=str(out), **SETTINGS), progress=False)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs, no dashboard) for the module: analyses reuse an open session."""
    with ray_backend.session("auto", cpus=2):
        yield


def _records(out) -> dict:
    """The run cache's records by key, without their wall times (order is completion order: ignored)."""
    lines = [json.loads(line) for line in runs_path(out).read_text().splitlines()[1:]]
    return {r["key"]: {k: v for k, v in r["record"].items() if k not in TIMINGS} for r in lines}


def test_ray_gives_the_serial_and_pool_results(model, serial, local_ray, tmp_path, monkeypatch):
    monkeypatch.setattr("mcutrain.search.runs._run_here", _not_here)  # the runs must go to Ray
    ray_cfg = AnalysisConfig(model=model, out=str(tmp_path / "ray.json"), ray="auto", **SETTINGS)
    doc = analyze(ray_cfg, progress=False)
    assert doc["runs_new"] == N_RUNS and doc["settings"]["ray"] == "auto"
    assert {k: doc[k] for k in TABLES} == {k: serial[1][k] for k in TABLES}
    assert _records(ray_cfg.out) == _records(serial[0]) and len(_records(ray_cfg.out)) == N_RUNS
    monkeypatch.undo()
    pool_cfg = AnalysisConfig(model=model, out=str(tmp_path / "pool.json"), workers=2, **SETTINGS)
    pool = analyze(pool_cfg, progress=False)
    assert {k: pool[k] for k in TABLES} == {k: doc[k] for k in TABLES}
    assert _records(pool_cfg.out) == _records(ray_cfg.out)
    assert "ray" not in pool["settings"]  # information only, and only where Ray ran


def test_resumed_analysis_reuses_the_cache_under_ray(model, serial, local_ray, tmp_path, monkeypatch):
    out = tmp_path / "contrib.json"
    runs_path(out).write_text(runs_path(serial[0]).read_text())
    monkeypatch.setattr(ray_backend, "stream", _not_here)  # everything is cached: no task is submitted
    doc = analyze(AnalysisConfig(model=model, out=str(out), ray="auto", **SETTINGS), progress=False)
    assert doc["runs_new"] == 0 and doc["baseline"] == serial[1]["baseline"]


def test_failed_task_raises_its_own_error_after_the_finished_runs(model, local_ray):
    state = load_state(AnalysisConfig(model=model, out="x", **SETTINGS).finetune_config())
    good, bad = (RunSpec(0), "contrib-good"), (RunSpec(1, 99, 1.0), "contrib-bad")  # conv 99 does not exist
    finished = []
    with pytest.raises(McutrainError, match="99"):
        ray_backend.run_groups([[good], [bad]], state, lambda run, rec: finished.append(run), "auto")
    assert finished in ([], [RunSpec(0)])  # the good run arrives unless the failure was seen first
    assert ray.is_initialized()  # the module's session stays open: run_groups reused it


def test_lost_worker_is_a_runtime_error(local_ray):
    def dies(_shared, item):  # nested: Ray ships it by value, the worker needs no test module
        import os

        os._exit(1)
        yield item

    with pytest.raises(RuntimeError, match="a Ray task was lost"):
        ray_backend.stream(dies, [1], None, lambda _item: None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address, message", [
    (None, "no Ray head answers there within 10 s"),
    ("not an address", "use auto (a local Ray instance) or the head node's HOST:PORT"),
    ("ray://10.0.0.5:10001", "Ray Client addresses"),
])
def test_bad_address_is_one_line_exit_2(model, tmp_path, capsys, address, message):
    address = address or f"127.0.0.1:{_closed_port()}"
    code = cli_main(["analyze", model, "--data", "digits", "--out", str(tmp_path / "c.json"), "--ray", address,
                     "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "c.json").exists() and not runs_path(tmp_path / "c.json").exists()


def test_silent_address_times_out_with_its_limit(monkeypatch):
    def silent(address, timeout):
        raise TimeoutError(f"timed out after {timeout:g} s")

    monkeypatch.setattr(ray_backend.socket, "create_connection", silent)
    monkeypatch.setattr(ray_backend, "CONNECT_TIMEOUT_S", 0.2)
    with pytest.raises(McutrainError, match=r"^--ray 10\.0\.0\.5:6379: no Ray head answers there within 0\.2 s"):
        ray_backend.check_reachable("10.0.0.5:6379")


def test_ray_is_imported_only_when_asked_for():
    code = ("import sys, mcutrain, mcutrain.search.contrib, mcutrain.search.ray_backend, mcutrain.cli.main;"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _not_here(*_args, **_kw):
    raise AssertionError("this path must not run")
