"""A generated folder for one target (host, or a Cortex-M core: cortex-m7, -m4, -m33, -m55, -m3), and
``target.json``: what a run needs.

``mcutrain compile --target T --out DIR`` calls ``build_target``; ``mcutrain run DIR`` calls
``read_target``. The generated C says nothing about where its input comes from; ``target.json``
records it (resolution, preprocessing, the int8 input quantization, the class names, the guard's
settings and SRAM: ``guard``) beside the build
(the host library's name, or the firmware's memory maps and section sizes) and the backward's
accumulator mode the folder was generated with (``accumulate``: "float32", the default, or "float64",
the audit mode, see ``generate``; the C sources carry it, ``target.json`` says it; a ``target.json``
from before the option has no ``accumulate``: its folder is float64), and likewise the forward's kernels
(``kernels``: "dsp", the Cortex-M DSP extension's, by default on the cores that have it; "portable", the
only set the host and the Cortex-M3 run: ``TARGET_KERNELS``). A core's folder built with
``profile=True`` also has ``firmware-profile.elf`` and, under ``profile``, the program's ops in
schedule order (name, kind, phase): the generated C does not name them, a profile run needs them.
The folder is built beside ``out`` and renamed into place only when complete (``staging``): a failed
or killed compile leaves the previous folder as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

from mcutrain.codegen.cores import CORES, MemoryMap, core_of
from mcutrain.codegen.firmware import build_firmware, schedule_ops
from mcutrain.codegen.errors import CodegenError
from mcutrain.codegen.generate import DEFAULT_ACCUMULATE, check_sources, generate
from mcutrain.codegen.host import OPTIONS_BEFORE, build_host, folder_option, read_json_object, read_manifest
from mcutrain.codegen.staging import staged_folder
from mcutrain.io.atomic import atomic_write_text

__all__ = ["TARGET_FILE", "TARGET_KERNELS", "build_target", "read_target"]

TARGET_FILE = "target.json"
FORMAT = "mcutrain-target/1"
# target -> (its default forward kernels, the kernel sets it runs)
TARGET_KERNELS = {"host": ("portable", ("portable",)),
                  **{name: (core.kernels[0], core.kernels) for name, core in CORES.items()}}


def build_target(program, qmodel, plan, target: str, out, *, memory: MemoryMap | None = None,
                 accumulate: str = DEFAULT_ACCUMULATE, kernels: str | None = None, profile: bool = False,
                 log=print) -> dict:
    """Generate ``program`` into ``out`` with the backward's ``accumulate`` mode ("float32", the default:
    on the Cortex-M7's FPU; "float64": the audit mode, bit-equal to the NumPy reference), build it for
    ``target`` and write ``target.json``; returns it. ``kernels``: the forward's ("dsp" or "portable";
    None: the target's default, ``TARGET_KERNELS``). ``memory``: a core's Flash and SRAM (None: its
    typical part's, ``cores.CORES``). ``profile`` (core targets only): also the per-op profile firmware."""
    if target not in TARGET_KERNELS:
        raise CodegenError(f"unknown target {target!r}; targets: {', '.join(TARGET_KERNELS)}")
    kernels = check_target_kernels(target, kernels)
    if profile and target == "host":
        raise CodegenError("profile=True is for the Cortex-M targets (it times ops on the firmware), not the host")
    out = Path(out)
    title = f"{qmodel.spec.name} @{qmodel.resolution}, {plan.scheme}"
    info = {"format": FORMAT, "target": target, "out": str(out), "model": qmodel.spec.name,
            "resolution": qmodel.resolution, "scheme": plan.scheme, "num_classes": qmodel.num_classes,
            "classes": list(qmodel.classes), "preprocessing": dict(qmodel.preprocessing),
            "input": {"scale": float(qmodel.input.scale), "zero": int(qmodel.input.zero)},
            "lr": program.options.lr, "seed": program.options.seed, "accumulate": accumulate,
            "kernels": kernels, "backward": program.options.backward}
    # Built whole beside ``out``, then swapped in: a failed or killed build leaves the old folder.
    with staged_folder(out) as folder:
        generate(program, folder, title=title, accumulate=accumulate, kernels=kernels)
        manifest = read_manifest(folder)
        # The guard's fixed settings and its SRAM (counted in compile's total: engine_state_bytes).
        info["guard"] = {**manifest["guard"], "state_bytes": manifest["state_bytes"]}
        if target == "host":
            log(f"building the host library for {out} ...")
            info["library"] = build_host(folder).name
        else:
            part = (memory or core_of(target).part).name
            log(f"cross-compiling for the {target} ({part}, run on QEMU {core_of(target).machine}) for {out} ...")
            info.update(build_firmware(folder, memory=memory, profile=profile, core=target))
            if profile:
                info["profile"]["ops"] = schedule_ops(program)
        atomic_write_text(folder / TARGET_FILE, json.dumps(info, indent=1) + "\n")
    return info


def check_target_kernels(target: str, kernels: str | None) -> str:
    """The kernel set a ``target`` folder is generated with: ``kernels``, or the target's default."""
    default, runs = TARGET_KERNELS[target]
    if kernels is None:
        return default
    if kernels not in runs:
        raise CodegenError(f"kernels={kernels!r} does not run on the {target} target (it runs: {', '.join(runs)}); "
                           f"dsp is Arm ACLE code for the Cortex-M DSP extension")
    return kernels


def read_target(folder) -> dict:
    path = Path(folder) / TARGET_FILE
    if not path.is_file():
        raise CodegenError(f"{folder}: no {TARGET_FILE}; make the folder with "
                           f"`mcutrain compile MODEL --scheme S --target host|cortex-m7 --out {folder}`")
    info = read_json_object(path)
    if info.get("format") != FORMAT:
        raise CodegenError(f"{path}: format {info.get('format')!r}, expected {FORMAT!r} (regenerate the folder)")
    check_sources(folder)
    manifest = read_manifest(folder)
    for name, before in OPTIONS_BEFORE.items():
        info.setdefault(name, before)  # a target.json from before the option
        generated = folder_option(manifest, name)
        if generated != info[name]:
            raise CodegenError(f"{folder}: {TARGET_FILE} says {name}={info[name]!r} but its C was generated with "
                               f"{generated!r} (regenerated since it was built?); rebuild it with `mcutrain compile "
                               f"... --target {info['target']} --{name} ... --out {folder}`")
    return info
