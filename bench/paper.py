"""The paper's networks as the C benchmarks build them, and the paper's own per-step figures.

Every benchmark of the generated C measures the same thing: a paper network with random int8 weights
(time and memory do not depend on them), 10 classes, the paper's ~100 KB scheme, channels permuted
for it, compiled for C; the firmware ones feed it digits samples. One place, so that the pages compare
the same programs.
"""

from __future__ import annotations

SCHEME = "paper-99kb"
# The paper's training latency per image on an STM32F746 (TinyEngine, sparse update), DESIGN.md section 6.
PAPER_MS_PER_STEP = {"mcunet-5fps": 546, "mbv2-w0.35": 373, "proxyless-w0.3": 443}
CLOCK_HZ = 216e6


def paper_cycles_per_step(name: str) -> float:
    return PAPER_MS_PER_STEP[name] * 1e-3 * CLOCK_HZ


def paper_model(name: str, resolution: int):
    """(the random-weight int8 model of ``name`` permuted for the scheme, the scheme's plan)."""
    from mcutrain.quant.random_model import random_qmodel
    from mcutrain.sparse import get_builtin, resolve
    from mcutrain.sparse.permute import prepare_model

    qmodel = random_qmodel(name, resolution, num_classes=10)[0]
    plan = resolve(get_builtin(SCHEME, name), qmodel.spec)
    return prepare_model(qmodel, plan), plan


def codegen_program(name: str, resolution: int, backward: str = "float32"):
    """(the program the C target runs, its model, its plan); ``backward``: "float32" or "int8"."""
    from mcutrain.codegen import compile_for_codegen

    qmodel, plan = paper_model(name, resolution)
    return compile_for_codegen(qmodel, plan, lr=0.01, seed=0, backward=backward), qmodel, plan


def digits_samples(qmodel, n_train: int, n_eval: int):
    """(train images, labels, held-out images, labels): digits as the model's int8 input."""
    from mcutrain.codegen.samples import int8_samples
    from mcutrain.data import load_dataset

    data = load_dataset("digits", seed=0)
    draw = dict(resolution=qmodel.resolution, preprocessing=qmodel.preprocessing, input_scale=qmodel.input.scale,
                input_zero=qmodel.input.zero)
    return (*int8_samples(data.train, n_train, seed=0, **draw), *int8_samples(data.test, n_eval, seed=1, **draw))
