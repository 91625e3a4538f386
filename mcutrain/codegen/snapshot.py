"""Read a device's ``mct_save`` snapshot on the host: check it as ``mct_restore`` does, decode its slices.

Why: a device trains the model compiled into a folder and saves its parameters with ``mct_save``;
``mcutrain export --params`` turns that snapshot back into a model. A snapshot holds only the model
identity (a hash) and the trained slices' bytes, not their layout: which parameters were trained, their
kept shapes and save offsets come from the compiled folder's ``manifest.json``. The checks are
``load_snapshot``'s in model.c, in its order (length, magic and version, the length the header promises,
CRC, identity), with its messages (``storage.RESTORE_CODES``); the format's constants and CRC are
``storage``'s, defined once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from mcutrain.codegen.storage import (RESTORE_CODES, SAVE_AT, SAVE_CRC_BYTES, SAVE_HEADER_BYTES, SAVE_MAGIC,
                                      SAVE_VERSION, ParamStorage, model_identity, save_bytes, save_crc)
from mcutrain.errors import McutrainError

DTYPES = ("int8", "int32")


class SnapshotError(McutrainError):
    """A snapshot ``mct_restore`` would refuse (``code``: its return code), or a compiled folder whose
    layout cannot be read (``code`` None)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Snapshot:
    step: int
    slices: dict[str, np.ndarray]  # parameter name -> its trained slice (kept shape), in parameter order


def layout_of(manifest: dict, where: str) -> tuple[ParamStorage, ...]:
    """The parameters of a compiled folder's ``manifest.json`` as ``ParamStorage`` (symbols left empty:
    only the layout matters here). ``where`` names the folder in errors."""
    params = manifest.get("params")
    if not isinstance(params, list) or not params:
        raise SnapshotError(f"{where}: manifest.json lists no parameters; compile the folder again")
    try:
        return tuple(_storage(p) for p in params)
    except (KeyError, TypeError, ValueError) as err:
        raise SnapshotError(f"{where}: manifest.json has a malformed parameter entry ({type(err).__name__}); "
                            f"compile the folder again") from None


def _storage(p: dict) -> ParamStorage:
    if p["dtype"] not in DTYPES:
        raise ValueError(p["dtype"])
    kept = None if p["kept_shape"] is None else tuple(int(k) for k in p["kept_shape"])
    offset = None if p["save_offset"] is None else int(p["save_offset"])
    if (kept is None) != (offset is None):
        raise ValueError("kept_shape and save_offset disagree")
    return ParamStorage(str(p["name"]), p["dtype"], tuple(int(s) for s in p["shape"]), "",
                        "" if kept is not None else None, kept, offset)


def check_identity(storages, values: dict[str, np.ndarray], manifest_id: str) -> bool:
    """Whether ``values`` (name -> the integers a model holds) are the Flash values the folder was
    compiled from: its identity covers the layout and every parameter's initial value."""
    try:
        return model_identity(storages, values).hex() == manifest_id
    except (KeyError, McutrainError):
        return False


def read_snapshot(data: bytes, storages, model_id: str) -> Snapshot:
    """Check ``data`` as ``mct_restore`` does against the program of ``storages`` and ``model_id`` (hex);
    its trained slices, or ``SnapshotError`` naming the first check that failed."""
    n = len(data)
    if n < SAVE_HEADER_BYTES + SAVE_CRC_BYTES:
        raise _refused(-1, f"{n} bytes, fewer than a header and a CRC")
    magic = data[SAVE_AT["magic"]:SAVE_AT["magic"] + len(SAVE_MAGIC)]
    (version,) = _u32(data, "version")
    if magic != SAVE_MAGIC or version != SAVE_VERSION:
        raise _refused(-2, f"magic {magic!r} version {version}, expected {SAVE_MAGIC!r} version {SAVE_VERSION}")
    (payload,) = _u32(data, "payload_bytes")
    if n != SAVE_HEADER_BYTES + payload + SAVE_CRC_BYTES:
        raise _refused(-1, f"{n} bytes, its header promises {SAVE_HEADER_BYTES + payload + SAVE_CRC_BYTES}")
    (crc,) = struct.unpack_from("<I", data, n - SAVE_CRC_BYTES)
    if save_crc(data[:n - SAVE_CRC_BYTES]) != crc:
        raise _refused(-4, f"CRC-32 {save_crc(data[:n - SAVE_CRC_BYTES]):08x}, stored {crc:08x}")
    found = data[SAVE_AT["model_id"]:SAVE_AT["model_id"] + 16].hex()
    if found != model_id or n != save_bytes(storages):
        raise _refused(-3, f"identity {found}, the program's is {model_id}")
    (step,) = _u32(data, "step")
    return Snapshot(step, _slices(data[SAVE_HEADER_BYTES:n - SAVE_CRC_BYTES], storages))


def _u32(data: bytes, field: str) -> tuple[int]:
    return struct.unpack_from("<I", data, SAVE_AT[field])


def _refused(code: int, detail: str) -> SnapshotError:
    return SnapshotError(f"snapshot refused: {RESTORE_CODES[code]}: {detail}; nothing was written", code)


def _slices(payload: bytes, storages) -> dict[str, np.ndarray]:
    """Each trained parameter's SRAM copy (native little-endian, as mct_save writes on Cortex-M and x86)."""
    out = {}
    for s in storages:
        if s.trained:
            dtype = np.dtype(s.dtype).newbyteorder("<")
            chunk = payload[s.save_offset:s.save_offset + s.sram_bytes]
            out[s.name] = np.frombuffer(chunk, dtype).astype(s.dtype).reshape(s.kept_shape)
    return out


# ----------------------------------------------------------------------------------------------
# The graph side: engine parameter names <-> an imported graph's nodes


def graph_parameters(graph) -> dict[str, tuple[int, str, np.ndarray]]:
    """Engine parameter name (``{engine op}.weight`` / ``.bias``, ``engine.frontend``'s) -> (node index,
    field, value) for every convolution (and hidden fully connected layer, as its 1x1 conv) before the
    classifier and the classifier itself."""
    from mcutrain.engine.frontend import engine_names
    from mcutrain.quant.graph_head import classifier_node

    from mcutrain.quant.graph import fc_as_conv

    names = engine_names(graph)
    head_index, head, _ = classifier_node(graph)
    out = {}
    for index, node in enumerate(graph.nodes[:head_index]):
        if node.kind in ("conv2d", "fully_connected"):  # a hidden FC: its 1x1 conv's [K, C, 1, 1] weight
            op, conv = names[node.output], node.params if node.kind == "conv2d" else fc_as_conv(node)
            out[f"{op}.weight"] = (index, "weight", conv.weight)
            out[f"{op}.bias"] = (index, "bias", conv.bias)
    k = head.params.weight.shape[0]
    bias = np.zeros(k, np.int32) if head.params.bias is None else head.params.bias  # as the frontend does
    out["classifier.weight"] = (head_index, "weight", head.params.weight)
    out["classifier.bias"] = (head_index, "bias", bias)
    return out


def with_trained_slices(graph, slices: dict[str, np.ndarray]):
    """``graph`` with each trained slice written over the leading part of its parameter (a new QGraph)."""
    from dataclasses import replace

    params = graph_parameters(graph)
    missing = [name for name in slices if name not in params]
    if missing:
        raise SnapshotError(f"the program trains {missing[0]!r}, which this graph does not have; "
                            f"give the folder compiled from this model")
    nodes = list(graph.nodes)
    for name, value in slices.items():
        index, field, old = params[name]
        new = np.array(old, copy=True)
        new[tuple(slice(0, k) for k in value.shape)] = value
        if nodes[index].kind == "fully_connected" and new.ndim == 4:  # a hidden FC's conv weight
            new = new[:, :, 0, 0].copy()
        if field == "bias" and getattr(nodes[index].params, "bias", 0) is None and not new.any():
            new = None  # a fully connected layer without a bias keeps none while training left it 0
        nodes[index] = replace(nodes[index], params=replace(nodes[index].params, **{field: new}))
    return replace(graph, nodes=tuple(nodes))


def device_trained_graph(graph, snapshot: bytes, program_dir, model_label: str):
    """(``graph`` with the trained slices of ``snapshot``, what was applied): the snapshot a device saved
    with ``mct_save`` while running the program compiled into ``program_dir``. A folder not compiled
    from this graph, or a snapshot ``mct_restore`` would refuse, is refused in one line (before anything
    is written). Used by ``mcutrain export --params`` and by the demo's export."""
    from mcutrain.codegen.host import read_manifest
    from mcutrain.errors import one_line

    manifest = read_manifest(program_dir)
    storages = layout_of(manifest, one_line(str(program_dir)))
    values = {name: value for name, (_, _, value) in graph_parameters(graph).items()}
    if not check_identity(storages, values, str(manifest.get("model_id", ""))):
        raise McutrainError(f"--program {one_line(str(program_dir))} was not compiled from {one_line(model_label)} "
                            f"(its model identity differs); give the folder the device's program was compiled into")
    saved = read_snapshot(snapshot, storages, manifest["model_id"])
    trained = with_trained_slices(graph, saved.slices)
    return trained.validate(), {"step": saved.step, "trained": list(saved.slices)}
