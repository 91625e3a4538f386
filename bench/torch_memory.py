"""Peak memory of one full fp32 training step in PyTorch eager, measured in a fresh process.

The paper's memory ladder starts from framework figures (PyTorch: 303 MB for MobileNetV2 w0.35). Here:
a fresh Python process builds the float zoo model, runs one warm-up-free training step (forward,
loss, backward, SGD-momentum update of all parameters) at batch 1, and reports the growth of its
peak resident set (VmHWM) over the resident set just before the step: the memory training itself
took, without the interpreter and the torch library. Fresh processes keep networks from sharing a
high-water mark.
"""

from __future__ import annotations

import json
import subprocess
import sys

_CHILD = r"""
import json, sys, torch, torch.nn.functional as F
torch.set_num_threads(1)
from mcutrain.models import build_model

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

name, res = sys.argv[1], int(sys.argv[2])
model = build_model(name, 10).train()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(1, 3, res, res), torch.tensor([3])
before = status("VmRSS")
opt.zero_grad(set_to_none=True)
F.cross_entropy(model(x), y).backward()
opt.step()
print(json.dumps({"rss_before_bytes": before, "peak_bytes": status("VmHWM"),
                  "training_bytes": status("VmHWM") - before}))
"""


def torch_training_peak(name: str, resolution: int = 128) -> dict:
    """{"rss_before_bytes", "peak_bytes", "training_bytes"} of one fp32 step in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _CHILD, name, str(resolution)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    for model in ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"):
        r = torch_training_peak(model)
        print(f"{model:16s} training step grew the process by {r['training_bytes'] / 2**20:6.1f} MiB "
              f"(peak RSS {r['peak_bytes'] / 2**20:.0f} MiB)")
