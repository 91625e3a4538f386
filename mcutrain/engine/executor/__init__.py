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
channel-by-channel kernels need instead of those temporaries. Row pipelines and channel-by-channel
block backwards (``ARENA_KERNELS``) work in the arena themselves: they keep their rings / their few
channels of gradient in their op's planned scratch bytes and write their outputs' views as they go. A streamed input (``Graph.streams``, the image) is never copied into the
arena: the caller's array stays outside, like a camera or DMA source, and the pipeline that reads
it asks for one row at a time (``RowSource``).

``Executor(program)``: ``predict(image) -> logits`` runs the inference stage (the forward alone, with
its own plan, sharing the parameter copies); ``train_step(image, label) -> loss`` runs forward,
backward and updates and counts steps from 1 (the RNG's step); ``parameters()`` gives every parameter.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from mcutrain.engine.executor.arena_kernels import ARENA_KERNELS
from mcutrain.engine.executor.int8_kernels import GradTensor
from mcutrain.engine.executor.kernels import KERNELS
from mcutrain.engine.ir import GRAD_DTYPES, GRAD_HEADER_BYTES, TensorInfo
from mcutrain.engine.lifetimes import scratch_bytes, storage_roots
from mcutrain.engine.memory import check_plan
from mcutrain.engine.passes.fuse_backward import update_ops

__all__ = ["Arena", "Executor", "RowSource", "StageRunner", "trainable_params"]


def trainable_params(graph) -> list[str]:
    """Parameters some update writes (update ops, and updates inside fused block backwards): they
    get SRAM copies."""
    return [op.inputs[0] for op in update_ops(graph)]


class Arena:
    """One stage's arena: a bytearray of the plan's size and a view per arena tensor at its offset."""

    def __init__(self, stage, check: bool = True):
        if check:
            check_plan(stage.plan)
        self.memory = bytearray(stage.plan.arena_bytes)
        roots = storage_roots(stage.graph)
        self.infos = {name: stage.graph.tensor(name) for name in roots}
        self.views = {name: self._view(info, stage.plan.offsets[roots[name]]) for name, info in self.infos.items()}
        self.scratch = {}  # op name -> its scratch bytes (uint8 view at the planned offset)
        for op in stage.graph.ops:
            size = scratch_bytes(stage.graph, op)
            if size:
                offset = stage.plan.offsets[f"{op.name}.scratch"]
                self.scratch[op.name] = np.frombuffer(self.memory, np.uint8, size, offset)

    def _view(self, info: TensorInfo, offset: int):
        if info.dtype in GRAD_DTYPES:  # the exponent (int32), then the payload: ir.GRAD_HEADER_BYTES
            header = np.frombuffer(self.memory, np.int32, 1, offset)
            payload = np.frombuffer(self.memory, np.dtype(GRAD_DTYPES[info.dtype]), info.numel,
                                    offset + GRAD_HEADER_BYTES)
            return header, payload.reshape(info.shape)
        if info.dtype == "bit":
            return np.frombuffer(self.memory, np.uint8, info.nbytes, offset)
        return np.frombuffer(self.memory, np.dtype(info.dtype), info.numel, offset).reshape(info.shape)

    def __contains__(self, name: str) -> bool:
        return name in self.views

    def read(self, name: str) -> np.ndarray:
        """The tensor's current value (a view; bit masks unpacked to a new bool array)."""
        info, view = self.infos[name], self.views[name]
        if info.dtype in GRAD_DTYPES:
            return GradTensor(view[1], int(view[0][0]))
        if info.dtype == "bit":
            return np.unpackbits(view, count=info.numel, bitorder="little").reshape(info.shape).astype(bool)
        return view

    def write(self, name: str, value: np.ndarray) -> None:
        info, view = self.infos[name], self.views[name]
        if info.dtype in GRAD_DTYPES:
            self._write_grad(name, info, value)
            return
        value = np.asarray(value)
        if value.shape != info.shape:
            raise ValueError(f"{name}: value of shape {value.shape} for a tensor {info.type_str()}")
        if info.dtype == "bit":
            view[...] = np.packbits(value.astype(bool).ravel(), bitorder="little")
        else:
            view[...] = value


    def _write_grad(self, name: str, info: TensorInfo, value) -> None:
        header, payload = self.views[name]
        if not isinstance(value, GradTensor) or value.shape != info.shape:
            raise ValueError(f"{name}: {type(value).__name__} {getattr(value, 'shape', '')} for {info.type_str()}")
        payload[...] = value.g
        header[0] = value.e


class RowSource:
    """A streamed input outside the arena (a sensor, a DMA buffer, the host): one row at a time."""

    def __init__(self, array: np.ndarray):
        self._array = array
        self.shape = array.shape
        self.rows_read = 0

    def row(self, r: int) -> np.ndarray:
        """Row ``r`` of every channel, [C, W] (batch 1)."""
        self.rows_read += 1
        return self._array[0, :, r, :]


class _ArenaIO:
    """What an arena kernel may touch: its outputs' views (masks packed) and its scratch bytes."""

    def __init__(self, arena: Arena, op):
        self.outputs = [arena.views[name] for name in op.outputs]
        self.scratch = arena.scratch.get(op.name)


class StageRunner:
    """Runs one planned stage op by op: inputs from the arena, the parameter copies or constants."""

    def __init__(self, stage, params: dict[str, np.ndarray], check: bool = True):
        self.stage, self.params = stage, params
        self.arena = Arena(stage, check)
        self.sources: dict[str, RowSource] = {}
        self.constants = {n: _read_only(a) for n, a in stage.graph.constants.items() if n not in params}

    def value(self, name: str) -> np.ndarray:
        if name in self.arena:
            return self.arena.read(name)
        if name in self.sources:
            return self.sources[name]
        return self.params[name] if name in self.params else self.constants[name]

    def run(self, feeds: Mapping[str, np.ndarray], step: int = 0, record: dict | None = None) -> dict:
        """Feed the graph inputs, run every op, return copies of the graph outputs.

        ``record``: if given, receives a copy of every op output right after the op ran (for tests).
        """
        graph = self.stage.graph
        self.sources = {name: RowSource(np.asarray(feeds[name])) for name in graph.streams}
        for name in graph.inputs:
            if name not in graph.streams:
                self.arena.write(name, feeds[name])
        for op in graph.ops:
            args = [self.value(n) for n in op.inputs]
            if op.kind in ARENA_KERNELS:  # writes its outputs' arena views itself
                ARENA_KERNELS[op.kind](op, args, step, _ArenaIO(self.arena, op))
            else:
                for name, value in zip(op.outputs, KERNELS[op.kind](op, args, step), strict=True):
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
