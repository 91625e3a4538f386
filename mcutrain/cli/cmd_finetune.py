"""`mcutrain finetune`: simulated on-device training of an int8 model with a sparse-update scheme."""

from __future__ import annotations

from mcutrain.api.defaults import defaults
from mcutrain.api.training import FinetuneResult, finetune
from mcutrain.cli import argtypes
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.errors import TrainingFailed
from mcutrain.train.int8_optim import BACKWARDS, OPTIMIZERS, UPDATE_RULES


def register(subparsers) -> None:
    d = defaults(finetune)
    p = subparsers.add_parser(
        "finetune", help=HELP["finetune"],
        description="Fine-tune MODEL (an int8 model file, or an int8 graph of `mcutrain import`) on --data "
                    "with the parameters --scheme selects "
                    "(a built-in name, see `mcutrain scheme list`, or a scheme JSON file). A dataset with "
                    "other classes than the model gets a new int8 head. --float trains the fp32 twin "
                    "(same folded graph, dequantized) as the baseline. A run that fails to learn (the loss becomes "
                    "non-finite, rises far above its start or stays at chance level log K, or the validation "
                    "accuracy ends at chance) exits with status 3 and writes nothing unless --keep-failed.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--data", required=True)
    p.add_argument("--scheme", required=True, help="built-in scheme name or JSON path")
    p.add_argument("--out", required=True, metavar="MODEL2", help="trained int8 model to write")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d["optimizer"])
    p.add_argument("--momentum", type=float, default=d["momentum"],
                   help="SGD momentum (0: plain SGD, as on the device)")
    qas = p.add_mutually_exclusive_group()
    qas.add_argument("--qas", dest="qas", action="store_true", default=d["qas"],
                     help="quantization-aware scaling (default)")
    qas.add_argument("--no-qas", dest="qas", action="store_false")
    p.add_argument("--update-rule", choices=UPDATE_RULES, default=d["update_rule"],
                   help="sr: int8 weights, stochastic rounding (default, as on the device); latent: fp32 copies")
    p.add_argument("--backward", choices=BACKWARDS, default=d["backward"],
                   help="float32: fp32 gradients (default); int8: the integer backward (int8 gradients with a "
                        "power-of-two scale, as on a core without FPU; needs --momentum 0)")
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--lr", type=argtypes.learning_rate_or_auto, default=d["lr"],
                   help="learning rate, or auto (default): derived from the new head's curvature on the "
                        "training data, then a line search of short seeded runs on the validation split "
                        "(docs/learning-rate.md); the choice is printed and recorded in MODEL2")
    p.add_argument("--resolution", type=argtypes.resolution, default=d["resolution"],
                   help="input side (default: the model's)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--train-subset", type=int, default=d["train_subset"], help="use N random training samples (0: all)")
    p.add_argument("--eval-subset", type=int, default=d["eval_subset"],
                   help="evaluate on N random val/test samples (0: all)")
    p.add_argument("--augment", action="store_true", default=d["augment"], help="random flip and translation")
    p.add_argument("--float", action="store_true", default=d["float"], help="fp32 baseline: train the dequantized twin")
    p.add_argument("--keep-failed", action="store_true", default=d["keep_failed"],
                   help="write MODEL2 even when the run failed to learn (the exit status is still 3)")
    p.add_argument("--quiet", action="store_true", default=d["quiet"], help="no progress bar")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        result = finetune(args.model, args.data, args.scheme, args.out, optimizer=args.optimizer,
                          momentum=args.momentum, qas=args.qas, update_rule=args.update_rule, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, resolution=args.resolution, seed=args.seed,
                          train_subset=args.train_subset, eval_subset=args.eval_subset, augment=args.augment,
                          float=args.float, keep_failed=args.keep_failed, quiet=args.quiet,
                          backward=args.backward)
    except TrainingFailed as failed:  # the result (with "health") still goes out; main exits 3
        emit(args, failed.result, lambda _: FinetuneResult(failed.result).text())
        raise
    emit(args, result.to_dict(), lambda _: result.text())
    return 0
