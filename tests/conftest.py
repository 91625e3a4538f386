"""Suite-wide settings.

One torch thread per test process: `make test` runs two xdist workers on a 2-core machine, and two
processes each spinning two OpenMP threads stall every barrier (measured here: 30x slower training).
"""

import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
