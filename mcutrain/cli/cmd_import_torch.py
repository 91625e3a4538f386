"""`mcutrain import my_model.py:build --weights state.pt --input-shape 3,224,224 ... --out M`: PyTorch in.

The work (and why the import writes a float graph) is ``mcutrain.api.torch_file``; this declares the
arguments (``add_torch_import_arguments``; the ``import`` command wires them in, with defaults from
``mcutrain.api.import_model``) and runs them (``run_torch_import``).
"""

from __future__ import annotations

import argparse

from mcutrain.api.defaults import defaults
from mcutrain.api.imports import import_model
from mcutrain.api.torch_file import TorchImport, check_shape, torch_import_text
from mcutrain.api.torch_file import import_torch as import_torch_module
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.errors import McutrainError


def add_torch_import_arguments(parser: argparse.ArgumentParser, *, shared: bool = True) -> None:
    """The PyTorch import's arguments. ``shared=False`` leaves out those the ``import`` command already
    declares for its other formats (the positional PATH, ``--num-classes``/``--classes``, ``--out``,
    ``--json``) and leaves ``--input-shape`` optional for the parser (``import_torch`` then requires it).
    Defaults: ``mcutrain.api.import_model``'s."""
    d = defaults(import_model)
    if shared:
        parser.add_argument("path", metavar="FILE.py:FUNCTION",
                            help="a Python file and the function in it that returns the nn.Module; the file is "
                                 "imported and the function called: this RUNS THE FILE'S CODE")
        parser.add_argument("--num-classes", type=int, metavar="N", default=d["num_classes"],
                            help="classes of the task; a final Linear with another count is replaced by a new one")
        parser.add_argument("--out", required=True, metavar="M", help="float graph checkpoint to write")
        add_json_flag(parser)
    parser.add_argument("--weights", metavar="STATE.pt", default=d["weights"],
                        help="state dict saved with torch.save(model.state_dict()), read with "
                             "torch.load(weights_only=True), mapped by module path (default: the builder's weights)")
    parser.add_argument("--input-shape", required=shared, metavar="C,H,W", type=_shape, default=d["input_shape"],
                        help="the model's input: channels (1 or 3), height, width, e.g. 3,224,224")
    parser.add_argument("--mean", metavar="M1,M2,M3", type=_floats, default=d["mean"],
                        help="per-channel mean of pixel/255 (ImageNet: 0.485,0.456,0.406); needs --std")
    parser.add_argument("--std", metavar="S1,S2,S3", type=_floats, default=d["std"],
                        help="per-channel std of pixel/255 (ImageNet: 0.229,0.224,0.225); needs --mean")
    parser.add_argument("--offset", type=float, default=d["offset"],
                        help="input = (pixel - OFFSET) * SCALE for every channel (default 128)")
    parser.add_argument("--scale", type=float, default=d["scale"], help="see --offset (default 1/128)")
    parser.add_argument("--data", default=d["data"],
                        help="also quantize with this data (calibration on its training split) and "
                             "report float and int8 test accuracy")
    parser.add_argument("--calibration-batches", type=int, default=d["calibration_batches"],
                        help="training batches of 64 images that set the activation ranges (default 16)")
    parser.add_argument("--seed", type=int, default=d["seed"], help="split and calibration seed (default 0)")


def _shape(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not C,H,W (three integers)")
    try:
        return check_shape(values)
    except McutrainError:
        raise argparse.ArgumentTypeError(f"{text!r}: channels must be 1 or 3, height and width 1..1024") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def run_torch_import(args) -> int:
    result = import_torch(args)
    emit(args, result.payload, torch_import_text)
    return 0


def import_torch(args) -> TorchImport:
    """The import the parsed arguments ask for (``mcutrain.api.torch_file.import_torch``)."""
    return import_torch_module(args.path, args.out, num_classes=args.num_classes,
                               classes=getattr(args, "classes", None), weights=args.weights, input_shape=args.input_shape, mean=args.mean, std=args.std,
                               offset=args.offset, scale=args.scale, data=args.data,
                               calibration_batches=args.calibration_batches, seed=args.seed)
