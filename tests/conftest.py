"""Suite-wide settings.

One torch thread per test process: `make test` runs two xdist workers on a 2-core machine, and two
processes each spinning two OpenMP threads stall every barrier (measured here: 30x slower training).

Architectures a test loads from a user's file are remembered by name in the process
(``mcutrain.models.zoo``); every test starts with the zoo alone, so none depends on another's files.
"""

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _zoo_only_afterwards():
    from mcutrain.models.zoo import forget_loaded_specs

    yield
    forget_loaded_specs()
