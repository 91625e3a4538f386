"""`mcutrain finetune`: simulated on-device training of an int8 model with a sparse-update scheme."""

from __future__ import annotations

import sys

from mcutrain.cli import argtypes
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.errors import TrainingFailed
from mcutrain.train.finetune import FinetuneConfig, finetune, no_qas_warning
from mcutrain.train.int8_optim import OPTIMIZERS, UPDATE_RULES
from mcutrain.train.model_kind import load_trainable


def register(subparsers) -> None:
    d = FinetuneConfig("", "", "")
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
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (0: plain SGD, as on the device)")
    qas = p.add_mutually_exclusive_group()
    qas.add_argument("--qas", dest="qas", action="store_true", default=True, help="quantization-aware scaling (default)")
    qas.add_argument("--no-qas", dest="qas", action="store_false")
    p.add_argument("--update-rule", choices=UPDATE_RULES, default=d.update_rule,
                   help="sr: int8 weights, stochastic rounding (default, as on the device); latent: fp32 copies")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=argtypes.learning_rate_or_auto, default=d.lr,
                   help="learning rate, or auto (default): derived from the new head's curvature on the "
                        "training data, then a line search of short seeded runs on the validation split "
                        "(docs/learning-rate.md); the choice is printed and recorded in MODEL2")
    p.add_argument("--resolution", type=argtypes.resolution, default=0, help="input side (default: the model's)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--train-subset", type=int, default=0, help="use N random training samples (0: all)")
    p.add_argument("--eval-subset", type=int, default=0, help="evaluate on N random val/test samples (0: all)")
    p.add_argument("--augment", action="store_true", help="random flip and translation")
    p.add_argument("--float", action="store_true", help="fp32 baseline: train the dequantized twin")
    p.add_argument("--keep-failed", action="store_true",
                   help="write MODEL2 even when the run failed to learn (the exit status is still 3)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = FinetuneConfig(model=args.model, data=args.data, scheme=args.scheme, out=args.out,
                         optimizer=args.optimizer, momentum=args.momentum, qas=args.qas,
                         update_rule=args.update_rule, epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, resolution=args.resolution, seed=args.seed, augment=args.augment,
                         float=args.float, train_subset=args.train_subset,
                         eval_subset=args.eval_subset)
    model = None
    if not cfg.float and not cfg.qas:  # the user chose the int8 step without QAS: say what it costs
        model = load_trainable(cfg.model)
        print(f"mcutrain finetune: warning: {no_qas_warning(model, cfg)}", file=sys.stderr)
    try:
        result = finetune(cfg, progress=not args.quiet, model=model, keep_failed=args.keep_failed)
    except TrainingFailed as failed:  # the result (with "health") still goes out; main exits 3
        emit(args, failed.result, _human)
        raise
    emit(args, result, _human)
    return 0


def _human(r: dict) -> str:
    loss = "none" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
    fate = f"wrote {r['out']}" if r["out"] else "wrote nothing"
    return (f"test accuracy {r['accuracy_before'] * 100:.2f}% -> {r['accuracy'] * 100:.2f}% (n={r['n']}), "
            f"validation accuracy {r['val_accuracy'] * 100:.2f}%, final train loss {loss}, lr {r['config']['lr']:.3g}, "
            f"{r['images_per_s']:.0f} images/s; {'FAILED, ' if r['failed'] else ''}{fate}")
