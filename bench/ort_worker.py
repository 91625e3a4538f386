"""ONNX Runtime training, run inside its own virtual environment (.venv-ort): see bench/host_training.py.

    ort_worker.py artifacts MODEL.onnx TRAINABLE.json OUT_DIR   # generate_artifacts (frozen = the rest)
    ort_worker.py train OUT_DIR WARMUP STEPS SEED               # time batch-1 SGD steps, print one JSON line

Imports nothing from mcutrain, only ``bench.timing`` (shared with the other contestants).
The two phases run in separate processes so that the training process's peak resident set is the
training's, not the artifact generator's. One intra-op thread, like the other two contestants.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.timing import peak_rss_bytes, timed_steps  # noqa: E402  (runs as a script in its own environment)


def artifacts(model_path: str, trainable_path: str, out_dir: str) -> None:
    import onnx
    from onnxruntime.training import artifacts as art

    model = onnx.load(model_path)
    trainable = set(json.loads(open(trainable_path).read()))
    names = [i.name for i in model.graph.initializer]
    missing = trainable - set(names)
    if missing:
        raise SystemExit(f"trainable parameters not in the ONNX graph: {sorted(missing)}")
    art.generate_artifacts(model, requires_grad=sorted(trainable), frozen_params=[n for n in names if n not in trainable],
                           loss=art.LossType.CrossEntropyLoss, optimizer=art.OptimType.SGD, artifact_directory=out_dir)


def train(out_dir: str, warmup: int, steps: int, seed: int) -> None:
    import numpy as np
    import onnxruntime
    from onnxruntime.training.api import CheckpointState, Module, Optimizer

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    state = CheckpointState.load_checkpoint(f"{out_dir}/checkpoint")
    module = Module(f"{out_dir}/training_model.onnx", state, f"{out_dir}/eval_model.onnx", session_options=options)
    optimizer = Optimizer(f"{out_dir}/optimizer_model.onnx", module)
    optimizer.set_learning_rate(0.01)
    module.train()
    rng = np.random.default_rng(seed)
    shape = json.loads(open(f"{out_dir}/input_shape.json").read())
    images = rng.standard_normal((16, *shape)).astype(np.float32)
    labels = rng.integers(0, 10, size=(16, 1)).astype(np.int64)

    def step(i: int) -> float:
        loss = module(images[i % 16][None], labels[i % 16])
        optimizer.step()
        module.lazy_reset_grad()
        return float(loss)

    seconds, losses = timed_steps(step, warmup, steps)
    peak = peak_rss_bytes()
    print(json.dumps({"seconds_per_step": seconds, "peak_rss_bytes": peak, "losses": losses,
                      "onnxruntime": onnxruntime.__version__}))


if __name__ == "__main__":
    if sys.argv[1] == "artifacts":
        artifacts(*sys.argv[2:5])
    elif sys.argv[1] == "train":
        train(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        raise SystemExit(__doc__)
