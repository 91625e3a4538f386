"""What a firmware run under QEMU reports, computed by the host build: the side every firmware test compares."""

from __future__ import annotations

import numpy as np

from mcutrain.codegen import HostEngine, build_host
from mcutrain.codegen.cortex_m7 import fnv1a


def host_run(folder, images, labels, probe):
    """(losses, logits on ``probe`` before and after training, checksum of ``mct_save``) of the host build."""
    engine = HostEngine(build_host(folder))
    before = np.concatenate([engine.predict(x) for x in probe])
    losses = np.array([engine.train_step(x, int(y)) for x, y in zip(images, labels)], np.float32)
    after = np.concatenate([engine.predict(x) for x in probe])
    return losses, before, after, fnv1a(engine.save())
