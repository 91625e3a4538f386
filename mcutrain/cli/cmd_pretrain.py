"""`mcutrain pretrain`: float training of a zoo network or a JSON architecture on a dataset (resumable)."""

from __future__ import annotations

from mcutrain.api.defaults import defaults
from mcutrain.api.training import pretrain
from mcutrain.cli import argtypes
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.errors import TrainingFailed


def register(subparsers) -> None:
    d = defaults(pretrain)
    p = subparsers.add_parser(
        "pretrain", help=HELP["pretrain"],
        description="Float pretraining with SGD + momentum and a cosine schedule. Writes CKPT, "
                    "CKPT-stem.state.safetensors (for --resume) and CKPT-stem.metrics.jsonl (losses, accuracies, "
                    "seconds and images/s per epoch) after every epoch; identical runs write identical CKPT and "
                    "state files (no timings in them). A loss or weight that becomes NaN or infinite stops the "
                    "run before anything of that epoch is written; a run that ends without learning (loss at "
                    "or above chance level log K or risen far above its start, validation accuracy at "
                    "chance) fails too. A failed run exits with status 3 and removes CKPT and its state "
                    "(the metrics file stays) unless --keep-failed.")
    p.add_argument("--model", required=True,
                   help="zoo name (see `mcutrain zoo`) or an architecture .json file (docs/own-model.md)")
    p.add_argument("--data", required=True, help="dataset name, folder:PATH or npz:PATH (see `mcutrain data list`)")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint to write (.safetensors)")
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--lr", type=argtypes.learning_rate, default=d["lr"], help="peak learning rate")
    p.add_argument("--momentum", type=float, default=d["momentum"])
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    p.add_argument("--label-smoothing", type=float, default=d["label_smoothing"])
    p.add_argument("--resolution", type=argtypes.resolution, default=d["resolution"],
                   help="input side (default: the model's, 128 for paper nets)")
    p.add_argument("--no-augment", action="store_true", default=d["no_augment"],
                   help="disable random flip and translation")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--resume", action="store_true", default=d["resume"],
                   help="continue a killed run from its last finished epoch")
    p.add_argument("--force", action="store_true", default=d["force"], help="overwrite an existing run at CKPT")
    p.add_argument("--keep-failed", action="store_true", default=d["keep_failed"],
                   help="keep CKPT (the last finite epoch) and its state when the run fails (still exit 3)")
    p.add_argument("--quiet", action="store_true", default=d["quiet"], help="no progress bar")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    # Epoch lines go to stderr like the progress bar: stdout carries only the result (text or JSON).
    try:
        result = pretrain(args.model, args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          momentum=args.momentum, weight_decay=args.weight_decay,
                          label_smoothing=args.label_smoothing, resolution=args.resolution,
                          no_augment=args.no_augment, seed=args.seed, resume=args.resume, force=args.force,
                          keep_failed=args.keep_failed, quiet=args.quiet)
    except TrainingFailed as failed:  # --json still gets the result with its "health"; main exits 3
        if args.json and failed.result is not None:
            emit(args, failed.result, str)
        raise
    emit(args, result.to_dict(), lambda _: result.text())
    return 0
