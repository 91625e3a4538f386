"""`mcutrain import`: a foreign int8 model file (the paper's tiny-training .pkl) -> mcutrain int8 model file."""

from __future__ import annotations

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit, table
from mcutrain.errors import McutrainError
from mcutrain.quant.import_tiny_training import import_tiny_training
from mcutrain.quant.model_file import save_qmodel

FORMATS = ("tiny-training",)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import", help=HELP["import"],
        description="Read an int8 model of the paper (mit-han-lab/tiny-training mcu_models/*.pkl) with a "
                    "restricted unpickler (no code in the file ever runs), identify its architecture from its "
                    "conv shapes, freeze its degenerate channels (w_scale < 1e-8) and write an mcutrain int8 "
                    "model file. With --num-classes or --classes the 1000-class ImageNet head is replaced by a "
                    "zero-initialised int8 head for the new task; without, it is kept.")
    p.add_argument("path", metavar="PATH", help="the model file to import")
    p.add_argument("--format", required=True, choices=FORMATS, help="format of PATH")
    head = p.add_mutually_exclusive_group()
    head.add_argument("--num-classes", type=int, metavar="N", help="new head with N classes (named 0..N-1)")
    head.add_argument("--classes", metavar="A,B,C", help="new head with these class names (comma-separated)")
    p.add_argument("--out", required=True, metavar="MODEL", help="int8 model file to write")
    add_json_flag(p)
    p.set_defaults(func=run)


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(","))
    if any(not n for n in names):
        raise McutrainError(f"--classes {text!r}: class names must be non-empty, separated by commas")
    return names


def run(args) -> int:
    qmodel = import_tiny_training(args.path, num_classes=args.num_classes, classes=parse_classes(args.classes))
    save_qmodel(args.out, qmodel)
    prov = qmodel.provenance
    payload = {
        "out": args.out, "source": prov["source"], "format": prov["format"], "sha256": prov["sha256"],
        "model": qmodel.spec.name, "resolution": qmodel.resolution, "convs": len(qmodel.convs()),
        "degenerate_channels": prov["degenerate_channels_total"],
        "frozen_per_layer": prov["degenerate_channels"],
        "head": "replaced" if prov["head"] == "new" else "kept",
        "num_classes": qmodel.num_classes,
    }
    emit(args, payload, _human)
    return 0


def _human(r: dict) -> str:
    lines = [f"{r['source']} ({r['format']}): {r['model']} at {r['resolution']}x{r['resolution']}, "
             f"{r['convs']} convs"]
    if r["frozen_per_layer"]:
        lines.append(f"{r['degenerate_channels']} degenerate channels (w_scale < 1e-8) frozen:")
        lines.append(table([[name, n] for name, n in r["frozen_per_layer"].items()], ["layer", "frozen"]))
    else:
        lines.append("no degenerate channels")
    if r["head"] == "replaced":
        lines.append(f"head replaced: new zero-initialised int8 head, {r['num_classes']} classes")
    else:
        lines.append(f"head kept: the file's {r['num_classes']}-class classifier")
    lines.append(f"wrote {r['out']}")
    return "\n".join(lines)
