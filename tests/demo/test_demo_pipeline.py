"""The main job end to end on the bundled backbone, cut small: every stage runs for real (quantize, the
bundled contribution analysis recognised by its quantization recipe and task, exact-memory search,
compile, C training on the host, the same firmware under QEMU), and the report folder is written.
Run it under ATEN_CPU_CAPABILITY=default as well as natively: the bundled analysis must be found, and
its int8 model reproduced bit for bit, whatever the vector unit."""

import json

import numpy as np
import pytest

from mcutrain.assets import DEFAULT_CONTRIB
from mcutrain.codegen.firmware import tools_available
from mcutrain.demo import STACK_RESERVE_BYTES, DemoConfig, run_demo
from mcutrain.engine.memory import ENGINE_STATE_BYTES
from mcutrain.reports.demo import write_demo_report

pytestmark = pytest.mark.xdist_group("demo")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    missing = tools_available("arm-none-eabi-gcc", "qemu-system-arm")
    if missing:
        pytest.skip(f"{missing}; `make system` (scripts/setup_system.sh) installs it")
    out = tmp_path_factory.mktemp("demo")
    # A fixed rate: the demo's --lr auto (4 probes of 1,000 simulated samples, ~60 s) is the compile
    # command's, tested in tests/train/test_lr_auto.py; here it would be half the fixture's time.
    cfg = DemoConfig(own_eval_samples=200, steps=60, eval_samples=60, eval_every=30, device_steps=3,
                     population=6, generations=2, lr=0.05, out=str(out))
    result = run_demo(cfg)
    return cfg, result, write_demo_report(result, out)


def test_stages_give_the_numbers_they_promise(demo):
    cfg, r, _ = demo
    assert r["backbone"]["float_accuracy"] > 0.8 and r["backbone"]["int8_accuracy"] > 0.8
    assert r["contrib"]["source"] == ("bundled" if DEFAULT_CONTRIB.is_file() else "fast")
    if DEFAULT_CONTRIB.is_file():  # quantization is CPU-independent: the very model the analysis measured
        assert r["contrib"]["same_int8_model"] is True
        assert r["backbone"]["int8_identity"] == json.loads(DEFAULT_CONTRIB.read_text())["model"]["identity"]
    budget = r["search"]["sram_budget_bytes"] - STACK_RESERVE_BYTES
    assert r["search"]["search_sram_budget_bytes"] == budget
    assert r["compiled"]["total_sram_bytes"] <= budget
    assert r["compiled"]["total_sram_bytes"] == (r["compiled"]["arena_bytes"] + r["compiled"]["trainable_bytes"]
                                                 + ENGINE_STATE_BYTES)
    assert r["lr"] == {"lr": 0.05, "source": "--lr"}
    losses = np.asarray(r["losses"])
    assert len(losses) == cfg.steps and np.all(np.isfinite(losses))
    assert losses[-15:].mean() < losses[:15].mean()  # it learns on the C engine
    assert [s for s, _ in r["host"]["accuracy_curve"]] == [0, 30, 60]


def test_firmware_equals_host_and_fits(demo):
    _, r, _ = demo
    d = r["device"]
    assert d["losses_equal_host"] and d["steps"] == 3
    assert d["sram_bytes"] <= 256 * 1024 and d["fits_256kb"]
    # measured static SRAM holds the computed arena + trained copies (and a little of the harness)
    assert d["sram"]["static"] >= r["compiled"]["total_sram_bytes"]
    assert d["instructions_per_step"] > d["instructions_per_inference"] > 0


def test_report_folder(demo):
    cfg, r, files = demo
    for f in files:
        assert f.is_file() and f.stat().st_size > 0, f
    summary = json.loads((files[0]).read_text())
    assert summary["search"]["scheme"] == r["search"]["scheme"]
    assert "mnist-5k" in files[1].read_text()


def test_own_checkpoint_runs_the_quick_analysis(tmp_path):
    """A user's model (a JSON architecture with 11 convs, fewer than the quick analysis' widest
    settings) on another task: the quick analysis adapts to the network, the rest runs unchanged."""
    from mcutrain.models.zoo import forget_loaded_specs
    from mcutrain.train.pretrain import PretrainConfig, pretrain
    from tests.helpers.arch import custom_doc, write_doc

    arch = write_doc(tmp_path / "my-tiny.json", custom_doc())
    ckpt = tmp_path / "mine.safetensors"
    try:
        pretrain(PretrainConfig(model=str(arch), data="digits", out=str(ckpt), epochs=2, batch_size=32, lr=0.05),
                 progress=False, log=lambda _m: None)
        cfg = DemoConfig(checkpoint=str(ckpt), task="mnist-5k", contrib="quick", sram_budget="64KB",
                         flash_budget="256KB", own_eval_samples=100, steps=40, eval_samples=40, eval_every=20,
                         device_steps=0, population=6, generations=2, lr=0.02, out=str(tmp_path / "demo"))
        r = run_demo(cfg)
    finally:
        forget_loaded_specs()
    assert r["contrib"]["source"] == "quick"
    assert r["compiled"]["total_sram_bytes"] <= 64 * 1024 - STACK_RESERVE_BYTES
    assert r["device"] == {"core": "cortex-m7", "skipped": "skipped (--device-steps 0)"}
    assert len(r["losses"]) == 40 and np.all(np.isfinite(r["losses"]))
