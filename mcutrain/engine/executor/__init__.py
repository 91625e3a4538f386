"""The NumPy reference executor: runs a compiled program inside ONE planned ``bytearray`` arena.

Why an arena and not a dict of arrays: the memory plan is only trustworthy if a program that uses it
computes the right numbers. Every arena tensor is a NumPy view at its planned offset
(``np.frombuffer(arena, dtype, count, offset)``), so two live tensors given overlapping bytes by a
wrong plan corrupt each other and the equivalence tests fail. Masks are stored PACKED, 1 bit per
element (``np.packbits``, little bit order, C order), exactly the bytes the plan reserves for them.
Trainable parameters live in their own arrays (the SRAM copies the update ops write in place);
frozen parameters and constants are read-only arrays (Flash). Kernels compute into NumPy temporaries
and then store into the output's view, so in-place ops (output over a dying input) are safe; the
scratch buffers the plan reserves for in-place depthwise and fused ops are what the device's
channel-by-channel kernels need instead of those temporaries.

``Executor(program)``: ``predict(image) -> logits`` runs the inference stage (the forward alone, with
its own plan, sharing the parameter copies); ``train_step(image, label) -> loss`` runs forward,
backward and updates and counts steps from 1 (the RNG's step); ``parameters()`` gives every parameter.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from mcutrain.engine.executor.kernels import KERNELS
from mcutrain.engine.ir import TensorInfo
from mcutrain.engine.lifetimes import storage_roots
from mcutrain.engine.memory import check_plan

__all__ = ["Arena", "Executor", "StageRunner", "trainable_params"]


def trainable_params(graph) -> list[str]:
    """Parameters some update op writes: they get SRAM copies."""
    return [op.inputs[0] for op in graph.ops if op.phase == "update"]


class Arena:
    """One stage's arena: a bytearray of the plan's size and a view per arena tensor at its offset."""

    def __init__(self, stage, check: bool = True):
        if check:
            check_plan(stage.plan)
        self.memory = bytearray(stage.plan.arena_bytes)
        roots = storage_roots(stage.graph)
        self.infos = {name: stage.graph.tensor(name) for name in roots}
        self.views = {name: self._view(info, stage.plan.offsets[roots[name]]) for name, info in self.infos.items()}

    def _view(self, info: TensorInfo, offset: int) -> np.ndarray:
        if info.dtype == "bit":
            return np.frombuffer(self.memory, np.uint8, info.nbytes, offset)
        return np.frombuffer(self.memory, np.dtype(info.dtype), info.numel, offset).reshape(info.shape)

    def __contains__(self, name: str) -> bool:
        return name in self.views

    def read(self, name: str) -> np.ndarray:
        """The tensor's current value (a view; bit masks unpacked to a new bool array)."""
        info, view = self.infos[name], self.views[name]
        if info.dtype == "bit":
            return np.unpackbits(view, count=info.numel, bitorder="little").reshape(info.shape).astype(bool)
        return view

    def write(self, name: str, value: np.ndarray) -> None:
        info, view = self.infos[name], self.views[name]
        value = np.asarray(value)
        if value.shape != info.shape:
            raise ValueError(f"{name}: value of shape {value.shape} for a tensor {info.type_str()}")
        if info.dtype == "bit":
            view[...] = np.packbits(value.astype(bool).ravel(), bitorder="little")
        else:
            view[...] = value


class StageRunner:
    """Runs one planned stage op by op: inputs from the arena, the parameter copies or constants."""

    def __init__(self, stage, params: dict[str, np.ndarray], check: bool = True):
        self.stage, self.params = stage, params
        self.arena = Arena(stage, check)
        self.constants = {n: _read_only(a) for n, a in stage.graph.constants.items() if n not in params}

    def value(self, name: str) -> np.ndarray:
        if name in self.arena:
            return self.arena.read(name)
        return self.params[name] if name in self.params else self.constants[name]

    def run(self, feeds: Mapping[str, np.ndarray], step: int = 0, record: dict | None = None) -> dict:
        """Feed the graph inputs, run every op, return copies of the graph outputs.

        ``record``: if given, receives a copy of every op output right after the op ran (for tests).
        """
        for name in self.stage.graph.inputs:
            self.arena.write(name, feeds[name])
        for op in self.stage.graph.ops:
            values = KERNELS[op.kind](op, [self.value(n) for n in op.inputs], step)
            for name, value in zip(op.outputs, values, strict=True):
                self.arena.write(name, value)
            if record is not None:
                record.update({name: self.arena.read(name).copy() for name in op.outputs})
        return {name: self.arena.read(name).copy() for name in self.stage.graph.outputs}


class Executor:
    """Runs a ``Program`` (``mcutrain.engine.compile``): predict, train_step, parameters."""

    def __init__(self, program, *, check: bool = True):
        self.program = program
        self.step = 0
        graph = program.train.graph
        self.params = {p: np.array(graph.constants[p], copy=True) for p in trainable_params(graph)}
        self._train = StageRunner(program.train, self.params, check)
        self._infer = StageRunner(program.inference, self.params, check)

    def predict(self, image_int8: np.ndarray, record: dict | None = None) -> np.ndarray:
        """int8 image [3, R, R] or [1, 3, R, R] -> fp32 logits [1, K]."""
        outputs = self._infer.run({"image": _image(image_int8)}, self.step, record)
        return outputs[self.program.inference.graph.outputs[0]]

    def train_step(self, image_int8: np.ndarray, label: int, record: dict | None = None) -> float:
        """One SGD step at batch 1 (forward, backward, in-place updates); returns the loss."""
        self.step += 1
        feeds = {"image": _image(image_int8), "label": np.array([label], dtype=np.int32)}
        return float(self._train.run(feeds, self.step, record)["loss"][0])

    def parameters(self) -> dict[str, np.ndarray]:
        """Every parameter of the model (copies): trained ones from SRAM, frozen ones from Flash."""
        graph = self.program.inference.graph
        return {p: np.array(self.params.get(p, graph.constants[p]), copy=True) for p in graph.params}


def _image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.int8:
        raise ValueError(f"the engine takes int8 images (p - 128), got {image.dtype}")
    return image if image.ndim == 4 else image[None]


def _read_only(array: np.ndarray) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view
