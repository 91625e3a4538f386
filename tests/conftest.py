"""Suite-wide settings.

One torch thread per test process: `make test` runs two xdist workers on a 2-core machine, and two
processes each spinning two OpenMP threads stall every barrier (measured here: 30x slower training).

The host target builds with the portable flags here (``MCUTRAIN_HOST_FLAGS``; users get -O3
-march=native by default): they compile about 1.5x faster, and the native build's bit-equality with
the portable one is tested on its own (tests/codegen/test_codegen_host_flags.py).

Architectures a test loads from a user's file are remembered by name in the process
(``mcutrain.models.zoo``); every test starts with the zoo alone, so none depends on another's files.
"""

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MCUTRAIN_HOST_FLAGS", "portable")


@pytest.fixture(autouse=True)
def _zoo_only_afterwards():
    from mcutrain.models.zoo import forget_loaded_specs

    yield
    forget_loaded_specs()
