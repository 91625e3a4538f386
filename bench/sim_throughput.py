"""Int8 simulation training throughput vs fp32 PyTorch training, same network and batch, one process.

For each paper network at 128x128, batch 32, every parameter trained (the `full` scheme; the most
backward work): fp32 = the float zoo model with SGD-momentum; int8 = the bit-exact simulation
(`Int8Net` + `Int8Optimizer`, SGD-momentum + QAS, stochastic rounding). Timed windows of the two
alternate (fp32, int8, fp32, int8, ...) so that load on the machine hits both alike; the ratio is the
median over windows. Target (issue 3): int8 at least 0.5x fp32.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from bench.common import stamp, throughput_args, write_results
from mcutrain.models.specs import PAPER_SPECS
from mcutrain.quant.random_model import random_qmodel
from mcutrain.quant.sim_model import Int8Net
from mcutrain.sparse import get_builtin, resolve
from mcutrain.train.int8_optim import Int8Optimizer


def steppers(name: str, resolution: int, batch: int):
    qmodel, float_model = random_qmodel(name, resolution, num_classes=10)
    net = Int8Net(qmodel)
    net.set_trainable(resolve(get_builtin("full", name), qmodel.spec))
    int8_opt = Int8Optimizer(net, lr=1e-3, momentum=0.9, qas=True)
    float_model.train()
    fp32_opt = torch.optim.SGD(float_model.parameters(), lr=1e-3, momentum=0.9)
    x = (torch.randint(0, 256, (batch, 3, resolution, resolution)).float() - 128) / 128
    y = torch.randint(0, 10, (batch,))

    def fp32_step():
        fp32_opt.zero_grad(set_to_none=True)
        F.cross_entropy(float_model(x), y).backward()
        fp32_opt.step()

    def int8_step():
        int8_opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        int8_opt.step()

    return fp32_step, int8_step


def timed(step, steps: int, batch: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def main(argv=None) -> None:
    args = throughput_args(__doc__, argv, steps=3, windows=5)
    rows = []
    for spec in PAPER_SPECS:
        fp32_step, int8_step = steppers(spec.name, args.resolution, args.batch)
        fp32_step(), int8_step()  # warm-up
        fp32, int8 = [], []
        for _ in range(args.windows):
            fp32.append(timed(fp32_step, args.steps, args.batch))
            int8.append(timed(int8_step, args.steps, args.batch))
        ratio = statistics.median(i / f for i, f in zip(int8, fp32))
        rows.append({"model": spec.name, "fp32_images_per_s": round(statistics.median(fp32), 1),
                     "int8_images_per_s": round(statistics.median(int8), 1), "ratio": round(ratio, 3)})
        print(f"{spec.name:16s} fp32 {rows[-1]['fp32_images_per_s']:7.1f}  int8 {rows[-1]['int8_images_per_s']:7.1f}"
              f"  ratio {ratio:.2f}", flush=True)
    command = (f"make bench  (python -m bench.sim_throughput --resolution {args.resolution} --batch {args.batch} "
               f"--steps {args.steps} --windows {args.windows})")
    meta = stamp(command)
    md = [f"# Int8 simulation vs fp32 training throughput ({args.resolution}x{args.resolution}, batch {args.batch})",
          "", f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, {meta['torch_threads']} threads. "
          f"Command: `{command}`.",
          "Every parameter trained. fp32: the float model (with BatchNorm), SGD-momentum. int8: the bit-exact "
          "simulation with SGD-momentum + QAS and stochastic rounding. Alternating timed windows; the ratio is "
          "the median of per-window ratios. Target: int8 >= 0.5x fp32.", "",
          "| model | fp32 images/s | int8 images/s | int8 / fp32 |", "|---|---:|---:|---:|"]
    md += [f"| {r['model']} | {r['fp32_images_per_s']} | {r['int8_images_per_s']} | {r['ratio']:.2f} |" for r in rows]
    write_results("sim_throughput", {"benchmark": "sim_vs_fp32_throughput", "rows": rows, **meta}, "\n".join(md))


if __name__ == "__main__":
    main()
