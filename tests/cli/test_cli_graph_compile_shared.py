"""The two shared MLPerf Tiny models on the C engine (issue 13 item 5): imported with a new head,
compiled for the Cortex-M7 under a sparse scheme, they fit 256 KB SRAM and 1 MB Flash, and the
firmware under QEMU trains with the host build's losses bit for bit. Skipped (with the reason) when
../shared/tinyml-models is absent. Measured numbers: docs/tflite.md, "On the device"."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mcutrain.cli import cmd_compile, cmd_run
from mcutrain.codegen.firmware import tools_available
from mcutrain.quant.graph_file import save_graph_model
from mcutrain.quant.import_tflite import import_tflite
from tests.helpers.cli import run_command

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))
from graph_models import shared_model  # noqa: E402

M7_TOOLS = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
CASES = {"vww_96_int8": ("faces", ("non-face", "face")), "pretrainedResnet_quant": ("digits", tuple("0123456789"))}


def _json(module, argv: list[str]) -> dict:
    code, text = run_command(module, argv + ["--json"])
    assert code == 0
    return json.loads(text)


@pytest.mark.skipif(M7_TOOLS is not None, reason=f"Cortex-M7 runs need the cross tools: {M7_TOOLS}")
@pytest.mark.parametrize("name", CASES)
def test_shared_model_fits_and_the_firmware_equals_the_host(tmp_path, name):
    data, classes = CASES[name]
    path = tmp_path / f"{name}.safetensors"
    save_graph_model(path, import_tflite(shared_model(name), classes=classes, new_head=True))
    folders = {}
    for target in ("cortex-m7", "host"):
        folders[target] = tmp_path / target
        compiled = _json(cmd_compile, ["compile", str(path), "--scheme", "last-k:3", "--lr", "0.01",
                                       "--target", target, "--out", str(folders[target])])
    m7 = _json(cmd_run, ["run", str(folders["cortex-m7"]), "--data", data, "--steps", "2", "--eval", "1"])
    host = _json(cmd_run, ["run", str(folders["host"]), "--data", data, "--steps", "2", "--eval", "1"])
    print(f"{name}: SRAM {m7['sram_bytes']:,} B, Flash {m7['flash_bytes']:,} B, "
          f"{m7['instructions_per_step']:,} instructions per step")
    assert compiled["peak_sram_bytes"] < 256 * 1024
    assert m7["fits_256kb"] and m7["sram_bytes"] < 256 * 1024 and m7["flash_bytes"] < 1024 * 1024
    assert np.array(m7["losses"], np.float32).tobytes() == np.array(host["losses"], np.float32).tobytes()
    assert m7["instructions_per_step"] > m7["instructions_per_inference"] > 0
