"""Host training step: the generated C engine vs PyTorch eager vs ONNX Runtime training (issue 5 targets).

For each paper network at 128x128 with ``paper-99kb`` (random int8 weights: time and memory do not
depend on them), three contestants train at batch 1 on the same kind of input, one thread each, each in
a fresh process of its own so that its peak resident set (``ru_maxrss``) is its own:
  - **C**: the program ``mcutrain.codegen`` generates, built with the host compiler into a small
    executable (``bench/c/host_driver.c``) twice: ``native`` (-O3 -march=native, the host target's
    default) and ``portable`` (-O2, the reference flags), int8 forward, fp32 backward, the sparse update
    of the scheme; the two must report the same losses bit for bit (checked here);
  - **PyTorch eager**: the fp32 twin of the same int8 model (``FloatTwin``), the same trainable set
    (``set_trainable``: biases, first-k weight channels, classifier), SGD;
  - **ONNX Runtime training** 1.19.2 in its own virtual environment (``.venv-ort``, ``make ort-venv``):
    the fp32 twin exported to ONNX, ``generate_artifacts`` with the same frozen set (ONNX has no partial
    tensors, so a partially trained weight is trained whole there: slightly more work for ORT), SGD.
Each contestant runs ``--warmup`` untimed steps, then ``--steps`` timed ones; reported: seconds per step
(mean over the timed steps) and peak RSS of the whole process (VmHWM); ratios are taken within this one
run. ORT and PyTorch use their own vectorised fp32 kernels. ``--models`` picks networks (a short run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.common import ROOT, stamp, throughput_args, write_results
from bench.paper import SCHEME, paper_model
from bench.timing import peak_rss_bytes, timed_steps
from mcutrain.codegen.host import native_simd

NETWORKS = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
ORT_PYTHON = ROOT / ".venv-ort" / "bin" / "python"
DRIVER = ROOT / "bench" / "c" / "host_driver.c"


# ---------------------------------------------------------------------------------------- C


def run_c(name: str, resolution: int, warmup: int, steps: int, work: Path) -> dict:
    """Both host builds of the network's program, timed one after the other: {"native": ..., "portable": ...}."""
    from mcutrain.codegen import compile_for_codegen, generate
    from mcutrain.codegen.host import FLAG_SETS, compiler, host_cflags

    qmodel, plan = paper_model(name, resolution)
    folder = work / f"c-{name}"
    generate(compile_for_codegen(qmodel, plan, lr=0.01, seed=0), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    rng = np.random.default_rng(0)
    image_bytes = manifest["image_channels"] * manifest["image_height"] * manifest["image_width"]
    with open(folder / "samples.bin", "wb") as f:
        for _ in range(16):
            f.write(np.int32(rng.integers(0, 10)).tobytes())
            f.write(rng.integers(-128, 128, size=image_bytes, dtype=np.int8).tobytes())
    results = {}
    for flags in FLAG_SETS:
        exe = folder / f"host_driver-{flags}"
        cmd = [compiler(), *host_cflags(flags), f"-I{folder}", *(str(folder / s) for s in manifest["sources"]),
               str(DRIVER), "-o", str(exe), "-lm"]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        out = subprocess.run([str(exe), str(folder / "samples.bin"), str(warmup), str(steps)], check=True,
                             capture_output=True, text=True)
        results[flags] = {**json.loads(out.stdout), "cflags": list(host_cflags(flags)),
                          "arena_bytes": manifest.get("arena_bytes")}
    if results["native"]["losses"] != results["portable"]["losses"]:
        raise RuntimeError(f"{name}: the native build's losses differ from the portable build's")
    return results


# ------------------------------------------------------------------------------- PyTorch eager


def torch_worker(name: str, resolution: int, warmup: int, steps: int) -> dict:
    """Runs in a fresh process (``--worker torch``): time batch-1 fp32 steps of the twin."""
    import torch
    import torch.nn.functional as F

    from mcutrain.train.float_twin import FloatTwin

    torch.set_num_threads(1)
    qmodel, plan = paper_model(name, resolution)
    twin = FloatTwin(qmodel)
    twin.set_trainable(plan)
    params = [p for p in twin.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(16, 1, 3, resolution, resolution, generator=gen)
    labels = torch.randint(0, 10, (16, 1), generator=gen)

    def step(i: int) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(twin(images[i % 16]), labels[i % 16])
        loss.backward()
        optimizer.step()
        return float(loss)

    seconds, losses = timed_steps(step, warmup, steps)
    return {"seconds_per_step": seconds, "losses": losses, "torch": torch.__version__,
            "trainable_parameters": int(sum(p.numel() for p in params)),
            "peak_rss_bytes": peak_rss_bytes()}


def run_torch(name: str, resolution: int, warmup: int, steps: int) -> dict:
    return _json_of([sys.executable, "-m", "bench.host_training", "--worker", "torch", "--model", name,
                     "--resolution", str(resolution), "--warmup", str(warmup), "--steps", str(steps)])


# --------------------------------------------------------------------------- ONNX Runtime training


def export_onnx(name: str, resolution: int, folder: Path) -> None:
    """The fp32 twin as ONNX (TorchScript exporter, parameters as named initializers) + its trainable names.

    Runs under the ORT environment's interpreter (``--worker export``), which has ``onnx``."""
    import io

    import torch

    from mcutrain.train.float_twin import FloatTwin

    qmodel, plan = paper_model(name, resolution)
    twin = FloatTwin(qmodel)
    twin.set_trainable(plan)
    trainable = [n for n, p in twin.named_parameters() if p.requires_grad]
    buf = io.BytesIO()
    torch.onnx.export(twin, (torch.zeros(1, 3, resolution, resolution),), buf, input_names=["input"],
                      output_names=["logits"], do_constant_folding=False, dynamo=False,
                      training=torch.onnx.TrainingMode.TRAINING)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(buf.getvalue())
    (folder / "trainable.json").write_text(json.dumps(trainable))
    (folder / "input_shape.json").write_text(json.dumps([3, resolution, resolution]))


def run_ort(name: str, resolution: int, warmup: int, steps: int, work: Path) -> dict:
    if not ORT_PYTHON.is_file():
        return {"skipped": f"no {ORT_PYTHON.relative_to(ROOT)}: run `make ort-venv` (onnxruntime-training 1.19.2)"}
    folder = work / f"ort-{name}"
    # Exported by the ORT environment's torch + onnx (the project's own environment has no onnx).
    _json_of([str(ORT_PYTHON), "-m", "bench.host_training", "--worker", "export", "--model", name,
              "--resolution", str(resolution), "--out", str(folder)])
    worker = str(ROOT / "bench" / "ort_worker.py")
    subprocess.run([str(ORT_PYTHON), worker, "artifacts", str(folder / "model.onnx"), str(folder / "trainable.json"),
                    str(folder)], check=True, capture_output=True, text=True)
    return _json_of([str(ORT_PYTHON), worker, "train", str(folder), str(warmup), str(steps), "0"])


def _json_of(cmd: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- report


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Host training step: generated C vs PyTorch eager vs ONNX Runtime training", "",
        f"Command: `{meta['command']}` ({meta['date']}, {meta['machine']}, load {meta['load_average_1min']}).",
        f"Batch 1, 128x128, scheme `{SCHEME}`, random int8 weights, one thread each, each contestant in a "
        f"fresh process; {meta['warmup']} warm-up + {meta['steps']} timed steps (mean). Peak RSS = the "
        "process's VmHWM (for PyTorch and ORT it includes the interpreter and the libraries, which is what "
        "those processes cost; the C engine is a 3 MiB program of its own).", "",
        "C native = -O3 -march=native (the host target's default) with the AVX2 paths of mct_simd.h where "
        f"the CPU has AVX2 (here: {meta.get('native_simd') or 'none'}), C portable = the reference -O2 flags, "
        "scalar; both train bit for bit alike (same losses, checked by the bench; the tests also compare "
        "the arena after training). Speed-ups are C native's.", "",
        "| network | C native ms/step | C portable ms/step | native speed-up | PyTorch ms/step | ORT ms/step "
        "| C speed-up vs PyTorch | vs ORT | C peak RSS | PyTorch peak RSS | ORT peak RSS | RSS ratio PyTorch/C "
        "| ORT/C |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c, p, t, o = r["c"]["native"], r["c"]["portable"], r["torch"], r["ort"]
        ort_ms = _fmt_ms(o) if "skipped" not in o else "skipped"
        lines.append(
            f"| {r['network']} | {_fmt_ms(c)} | {_fmt_ms(p)} | {_ratio(p, c, 'seconds_per_step')} | {_fmt_ms(t)} "
            f"| {ort_ms} | {_ratio(t, c, 'seconds_per_step')} "
            f"| {_ratio(o, c, 'seconds_per_step')} | {_mib(c)} | {_mib(t)} | {_mib(o)} "
            f"| {_ratio(t, c, 'peak_rss_bytes')} | {_ratio(o, c, 'peak_rss_bytes')} |")
    skipped = [r["ort"]["skipped"] for r in rows if "skipped" in r["ort"]]
    if skipped:
        lines += ["", f"ONNX Runtime skipped: {skipped[0]}"]
    return "\n".join(lines)


def _fmt_ms(r: dict) -> str:
    return f"{1000 * r['seconds_per_step']:.1f}"


def _mib(r: dict) -> str:
    return f"{r['peak_rss_bytes'] / 2**20:.1f} MiB" if "peak_rss_bytes" in r else "-"


def _ratio(a: dict, b: dict, key: str) -> str:
    return f"{a[key] / b[key]:.1f}x" if key in a and key in b else "-"


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--worker" in argv:
        import argparse

        ap = argparse.ArgumentParser()
        for flag, kind in (("--worker", str), ("--model", str), ("--resolution", int), ("--warmup", int),
                           ("--steps", int), ("--out", Path)):
            ap.add_argument(flag, type=kind)
        a = ap.parse_args(argv)
        if a.worker == "export":
            export_onnx(a.model, a.resolution, a.out)
            print(json.dumps({"exported": str(a.out)}))
        else:
            print(json.dumps(torch_worker(a.model, a.resolution, a.warmup, a.steps)))
        return
    models = NETWORKS
    if "--models" in argv:  # a short run on some networks: printed, docs/results left as they are
        at = argv.index("--models")
        models = tuple(argv[at + 1].split(","))
        argv = argv[:at] + argv[at + 2:]
        unknown = sorted(set(models) - set(NETWORKS))
        if unknown:
            raise SystemExit(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(NETWORKS)}")
    args = throughput_args(__doc__.splitlines()[0], argv + ["--batch", "1"] if "--batch" not in argv else argv,
                           steps=20, windows=1)
    args.models = models
    warmup = 3
    meta = {**stamp("python -m bench.host_training " + " ".join(argv)), "warmup": warmup, "steps": args.steps,
            "native_simd": native_simd()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="mct-host-bench-") as tmp:
        for name in args.models:
            print(f"{name}: C ...", file=sys.stderr, flush=True)
            row = {"network": name, "c": run_c(name, args.resolution, warmup, args.steps, Path(tmp))}
            print(f"{name}: PyTorch ...", file=sys.stderr, flush=True)
            row["torch"] = run_torch(name, args.resolution, warmup, args.steps)
            print(f"{name}: ONNX Runtime ...", file=sys.stderr, flush=True)
            row["ort"] = run_ort(name, args.resolution, warmup, args.steps, Path(tmp))
            rows.append(row)
            print(f"  C native {_fmt_ms(row['c']['native'])} ms, portable {_fmt_ms(row['c']['portable'])} ms, "
                  f"PyTorch {_fmt_ms(row['torch'])} ms, ORT "
                  f"{_fmt_ms(row['ort']) if 'skipped' not in row['ort'] else 'skipped'} ms", file=sys.stderr)
    if models == NETWORKS:
        write_results("host_training", {**meta, "scheme": SCHEME, "resolution": args.resolution, "rows": rows},
                      markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
