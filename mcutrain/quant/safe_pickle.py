"""Restricted loader for the paper's int8 model files (``mcu_models/*.pkl`` of mit-han-lab/tiny-training).

Those files are ``torch.save`` zip archives whose ``<root>/data.pkl`` is a plain dict of numpy arrays
and Python numbers. A pickle can run arbitrary code, so they are never opened with ``pickle.load`` or
``torch.load(weights_only=False)``: this module opens the zip with :mod:`zipfile` and unpickles
``data.pkl`` with an unpickler whose ``find_class`` resolves only the few numpy names that array
reconstruction needs, each to a checking wrapper, and refuses everything else (``CheckpointError``
naming the refused ``module.name``). Torch storages (``persistent_load``) are refused as well: the
files hold no tensors. After loading, the whole object graph is checked to contain only dicts, lists,
tuples, str, int, float, bool, None and numeric (non-object) numpy arrays / scalars.

Bounded work: a pickle's memo lets a few hundred bytes describe a graph with 2**40 paths (lists that
share their children), so the check walks each container once (memoised by identity, shared
references counted once) and refuses, before looking further, a graph of more than ``MAX_NODES``
objects and references, nested deeper than ``MAX_DEPTH`` on its longest path, or with a reference
cycle. ``data.pkl`` itself may be at most ``MAX_DATA_PKL_BYTES``. (The real files: ~1 MB, ~2,000
objects, 6 levels.)

What the three real files use (checked with ``pickletools``): ``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``, ``_codecs.encode``. Files written by numpy 2 name
``numpy._core.multiarray``, may hold numpy scalars (``multiarray.scalar``) and spell the data of an
empty array as ``bytes()``: allowed too (``bytes`` only without arguments).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

from mcutrain.errors import CheckpointError

MAX_DATA_PKL_BYTES = 32 * 2**20
"""data.pkl files larger than this are refused before reading (the real ones are < 1 MB). Why not more:
unpickling is bounded work per byte but not free; 32 MB of 2-byte memo references (a list of 16M
items, a few hundred KB compressed) takes about 2 s to unpickle before the object check refuses it."""
MAX_NODES = 1_000_000
"""Most containers + references (each shared one counted once) in an accepted object graph."""
MAX_DEPTH = 32
"""Deepest nesting (longest path from the root) of an accepted object graph."""


class _NdarrayClass:
    """Stands in for ``numpy.ndarray`` in the pickle: only :func:`_reconstruct` may use it."""

    def __repr__(self) -> str:
        return "<numpy.ndarray (restricted)>"


_NDARRAY = _NdarrayClass()


def _checked_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype(...)`` for numeric / bool / bytes dtypes only (no object dtypes)."""
    if not args or not isinstance(args[0], str):
        raise CheckpointError(f"refused numpy.dtype{_shown(args)}: only dtypes named by a string are allowed")
    dt = np.dtype(*args)
    if dt.hasobject or dt.kind not in "biufcSV":
        raise CheckpointError(f"refused numpy dtype {_shown(dt)}: only numeric arrays may be loaded")
    return dt


def _checked_reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')``: an empty array to fill."""
    if cls is not _NDARRAY:
        raise CheckpointError(f"refused array reconstruction of {_shown(cls)}: only numpy.ndarray is allowed")
    if tuple(shape) != (0,) or typecode not in (b"b", "b"):
        raise CheckpointError(f"refused array reconstruction with shape {_shown(shape)}, typecode {_shown(typecode)}")
    return _multiarray._reconstruct(np.ndarray, (0,), b"b")


def _checked_scalar(dtype: Any, data: Any = None) -> np.generic:
    """``numpy.core.multiarray.scalar(dtype, bytes)`` for non-object dtypes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise CheckpointError(f"refused numpy scalar of dtype {_shown(dtype)}")
    return _multiarray.scalar(dtype, data)


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode(str, 'latin1')``: how protocol-2 pickles spell bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError(f"refused _codecs.encode with encoding {_shown(encoding)}")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()``: how protocol-2 pickles spell ``b''`` (the data of an empty array)."""
    if args:
        raise CheckpointError(f"refused bytes{_shown(args)}: only bytes() is allowed")
    return b""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy.core.multiarray", "scalar"): _checked_scalar,
    ("numpy._core.multiarray", "scalar"): _checked_scalar,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _checked_dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds numeric numpy arrays and plain Python data, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refused to load {_shown(module)[1:-1]}.{_shown(name)[1:-1]}: model files may only contain "
                "numpy arrays and plain Python data (this file is foreign or malicious)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0] if isinstance(pid, tuple) and pid else pid
        raise CheckpointError(
            f"refused persistent object {_shown(kind)} (a torch storage): this loader reads numpy-only model "
            "files; tensors are not expected here"
        )


_PLAIN_SCALARS = (str, int, float, bool, type(None), bytes)


def _check_plain(root: Any, source: str = "data") -> None:
    """Refuse anything but plain data, walking each container once (see the module docstring).

    Iterative depth-first walk: ``height`` memoises, per container, the longest path below it, so a
    container reached again costs one lookup, and the longest path through it is still measured.
    """
    height: dict[int, int] = {}
    on_path: set[int] = set()
    budget = [MAX_NODES]
    stack = [_enter(root, source, 1, on_path, budget)] if _is_container(root) else []
    if not stack:
        _check_leaf(root, source)
    while stack:
        node, children, where, depth, tallest = stack[-1]
        child = next(children, _DONE)
        if child is _DONE:
            stack.pop()
            on_path.discard(id(node))
            height[id(node)] = tallest
            if stack:
                parent = stack[-1]
                stack[-1] = (*parent[:4], max(parent[4], tallest + 1))
            continue
        key, value = child
        if not _is_container(value):
            _check_leaf(value, f"{where}[{_shown(key)}]")
            continue
        if id(value) in height:  # shared: already checked; only its depth here matters
            if depth + 1 + height[id(value)] > MAX_DEPTH:
                raise CheckpointError(f"{where}[{_shown(key)}]: nested deeper than {MAX_DEPTH} levels")
            stack[-1] = (node, children, where, depth, max(tallest, height[id(value)] + 1))
            continue
        if id(value) in on_path:
            raise CheckpointError(f"{where}[{_shown(key)}]: a reference cycle (model data is a tree of plain values)")
        stack.append(_enter(value, f"{where}[{_shown(key)}]", depth + 1, on_path, budget))


_DONE = object()


def _is_container(obj: Any) -> bool:
    return isinstance(obj, (dict, list, tuple))


def _enter(node: Any, where: str, depth: int, on_path: set[int], budget: list[int]):
    """Stack entry (node, its (key, child) iterator, where, depth, tallest subtree so far)."""
    if depth > MAX_DEPTH:
        raise CheckpointError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    budget[0] -= 1 + len(node)
    if budget[0] < 0:
        raise CheckpointError(f"{where}: more than {MAX_NODES:,} objects and references in the file (the limit; "
                              f"a real model file holds a few thousand)")
    if type(node) not in (dict, list, tuple):
        raise CheckpointError(f"{where}: value of type {type(node).__name__} is not allowed")
    on_path.add(id(node))
    if isinstance(node, dict):
        for k in node:
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"{where}: dict key of type {type(k).__name__} is not allowed")
        children = iter(node.items())
    else:
        children = enumerate(node)
    return node, children, where, depth, 0


def _check_leaf(obj: Any, where: str) -> None:
    if isinstance(obj, np.ndarray):
        if type(obj) is not np.ndarray or obj.dtype.hasobject:
            raise CheckpointError(f"{where}: array of type {type(obj).__name__}/{obj.dtype} is not allowed")
    elif isinstance(obj, np.generic):
        if obj.dtype.hasobject:
            raise CheckpointError(f"{where}: object scalar is not allowed")
    elif not isinstance(obj, _PLAIN_SCALARS):
        raise CheckpointError(f"{where}: value of type {type(obj).__name__} is not allowed")


def _shown(value: Any) -> str:
    """``repr`` on one line, at most 60 characters: the values come from the (hostile) file."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def restricted_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; any failure is a ``CheckpointError``."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data)).load()
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError, RecursionError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{source}: corrupt or truncated pickle ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]})") from None
    _check_plain(obj, source)
    return obj


def read_torch_zip_data_pkl(path: str | Path) -> bytes:
    """The bytes of the single ``<root>/data.pkl`` of a ``torch.save`` zip archive."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such model file")
    try:
        with zipfile.ZipFile(p) as zf:
            names = [i for i in zf.infolist() if i.filename.count("/") == 1 and i.filename.endswith("/data.pkl")]
            if len(names) != 1:
                raise CheckpointError(
                    f"{p}: expected exactly one '<root>/data.pkl' in the archive, found {len(names)} "
                    "(not a torch.save zip archive)"
                )
            info = names[0]
            if info.file_size > MAX_DATA_PKL_BYTES:
                raise CheckpointError(f"{p}: data.pkl is {info.file_size} bytes, over the {MAX_DATA_PKL_BYTES} limit")
            return zf.read(info)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError,
            RuntimeError) as e:  # zipfile raises RuntimeError for an encrypted member
        raise CheckpointError(
            f"{p}: not a readable zip archive (expected a torch.save file; {type(e).__name__}: {e})"
        ) from None


def load_restricted_torch_pickle(path: str | Path) -> Any:
    """Load a numpy-only ``torch.save`` zip archive without running any code from it."""
    return restricted_loads(read_torch_zip_data_pkl(path), str(path))


TINY_TRAINING_KEYS = ("first_conv", "blocks", "feature_mix", "classifier")


def load_tiny_training_pickle(path: str | Path) -> dict:
    """Load one of the paper's int8 model files as its plain dict (see shared/upstream/README.md).

    Checks only the top level (a dict with first_conv, blocks (a list), feature_mix, classifier);
    interpreting the convs is the caller's job.
    """
    data = load_restricted_torch_pickle(path)
    if not isinstance(data, dict) or any(k not in data for k in TINY_TRAINING_KEYS):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{path}: not a tiny-training model file: expected a dict with keys {TINY_TRAINING_KEYS}, got {keys}"
        )
    if not isinstance(data["blocks"], list):
        raise CheckpointError(f"{path}: 'blocks' must be a list, got {type(data['blocks']).__name__}")
    return data
