"""Float training throughput (images/s) of the paper's networks at 128x128, batch 32.

One training step = forward + cross-entropy + backward + SGD-momentum update, all parameters trained,
on random inputs (throughput does not depend on the data). Each network gets warm-up steps, then the
median of several timed windows is reported, all in one process so the figures are comparable.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from bench.common import stamp, throughput_args, write_results
from mcutrain.models import build_model, model_summary
from mcutrain.models.specs import PAPER_SPECS


def images_per_second(name: str, resolution: int, batch: int, steps: int, windows: int) -> float:
    torch.manual_seed(0)
    model = build_model(name, 10).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, resolution, resolution), torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv=None) -> None:
    args = throughput_args(__doc__, argv, steps=5, windows=3)
    rows = []
    for spec in PAPER_SPECS:
        rate = images_per_second(spec.name, args.resolution, args.batch, args.steps, args.windows)
        macs = model_summary(spec.name, args.resolution)["macs"]
        rows.append({"model": spec.name, "images_per_s": round(rate, 1), "backbone_macs": macs})
        print(f"{spec.name:16s} {rate:8.1f} img/s", flush=True)
    meta = stamp(f"make bench  (python -m bench.float_throughput --resolution {args.resolution} "
                 f"--batch {args.batch} --steps {args.steps} --windows {args.windows})")
    payload = {"benchmark": "float_training_throughput", "resolution": args.resolution,
               "batch": args.batch, "rows": rows, **meta}
    lines = [f"# Float training throughput ({args.resolution}x{args.resolution}, batch {args.batch}, fp32, CPU)",
             "", f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']} with "
             f"{meta['torch_threads']} threads. Command: `{meta['command']}`.",
             "Median of the timed windows; one step = forward + loss + backward + SGD-momentum update of all parameters.",
             "", "| model | images/s | backbone MACs/image |", "|---|---:|---:|"]
    lines += [f"| {r['model']} | {r['images_per_s']:.1f} | {r['backbone_macs']:,} |" for r in rows]
    write_results("float_throughput", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
