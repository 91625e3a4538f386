"""What a firmware run under QEMU reports, computed by the host build: the side every firmware test compares."""

from __future__ import annotations

import numpy as np

from mcutrain.codegen import HostEngine, build_host
from mcutrain.codegen.firmware import fnv1a


def host_run(folder, images, labels, probe):
    """(losses, logits on ``probe`` before and after training, checksum of ``mct_save``, checksum of the
    arena right after training) of the host build, in the harness's order."""
    engine = HostEngine(build_host(folder))
    before = np.concatenate([engine.predict(x) for x in probe])
    losses = np.array([engine.train_step(x, int(y)) for x, y in zip(images, labels)], np.float32)
    arena = fnv1a(engine.arena().tobytes())
    after = np.concatenate([engine.predict(x) for x in probe])
    return losses, before, after, fnv1a(engine.save()), arena


def assert_firmware_equals_host(run, folder, images, labels, probe) -> None:
    """The firmware run ``run`` (trained on images/labels, evaluated on probe before and after) equals the
    host build of ``folder`` bit for bit: losses, logits, the saved parameters, and the whole arena after
    training (its float scratch shows a difference in the backward that rounds away before a parameter)."""
    losses, before, after, checksum, arena = host_run(folder, images, labels, probe)
    assert run.losses.tobytes() == losses.tobytes()
    assert run.logits["before"].tobytes() == before.tobytes()
    assert run.logits["after"].tobytes() == after.tobytes()
    assert not np.array_equal(before, after)  # training changed something the comparison saw
    assert len(probe) < 2 or not np.array_equal(before[0], before[1])  # the input reaches the logits
    assert run.save_fnv1a == checksum and run.steps == len(images)
    assert run.arena_fnv1a == arena, "the arenas after training differ (the backward's floats)"


def trained_state(lib, images, labels) -> dict:
    """A host library after training on (images, labels): the losses, the arena right after the last step
    (its float scratch shows a last-bit difference in the backward), the logits of the first two images
    and every parameter: what two builds of one folder must share byte for byte."""
    engine = HostEngine(lib)
    losses = np.array([engine.train_step(x, int(y)) for x, y in zip(images, labels)], np.float32)
    arena = engine.arena().copy()
    logits = np.concatenate([engine.predict(x) for x in images[:2]])
    return {"losses": losses, "arena": arena, "logits": logits,
            **{f"param:{k}": v for k, v in engine.parameters().items()}}
