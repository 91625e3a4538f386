"""Did this run learn? The one judgement every trainer uses (pretrain, finetune, analyze's runs, `run`).

Before this, a run failed only when its loss became NaN; the issue measured int8 runs at lr 1e6 that
ended at loss 47,443 and 10% accuracy (chance), reported as success with the model written. A run is
judged from what every trainer has: its training losses (per step or per epoch, in order), the
number of classes K, and, when known, the final validation accuracy and its sample count n.

It FAILED when, in this order (the first rule that fires names the reason):

1. parameters not finite: a NaN or infinite weight (the caller checks; ``parameters_finite=False``).
2. the loss ended non-finite: a non-finite loss in the tail (below). A non-finite loss earlier in a
   run that then recovered (the C engine's guard rolls back and halves its rate) is not a failure:
   what counts is where the run ends.
3. the loss rose far above its start: tail mean > ``RISE_FACTOR`` (3) x head mean AND > half of
   log K. Three times the start is far beyond the noise of a mean over a fifth of a run; the floor
   of log K / 2 keeps a rise of tiny losses (0.01 -> 0.04, a model that still fits) from counting.
   Below log K this rule is the only one that catches a run undoing what its start knew (K large).
4. the loss stayed at or above chance: tail mean >= log K, the cross-entropy of predicting every
   class with probability 1/K. A zero-initialised head starts exactly there and a random one near
   it, so a run that learned anything ends below it; label smoothing does not move this level.
5. validation accuracy at chance: accuracy <= 1/K + ``Z`` x sqrt((1/K)(1 - 1/K) / n), the normal
   approximation of the one-sided binomial bound a chance-level classifier reaches on n samples
   with probability about 5% (Z = 1.645). With so few samples that even this bound lies above
   halfway between chance and perfect (1/K + (1 - 1/K) / 2), the accuracy says nothing either way
   and the rule is skipped (reported as ``val_bound: null``): K = 2 needs n >= 11, and with n = 30
   a 2-class run fails below 65% (19/30 fails, 20/30 passes). The bound assumes balanced classes;
   a model that predicts the majority class of a skewed validation set can pass it.

What to do (``Health.lr_advice``): a loss that became non-finite, rose, or ended above 2 log K
blew up, so the rate was too high; a run left at chance (loss near log K, or accuracy) had a rate
too low or too high, so the advice is another rate, not a lower one.

Head and tail are the first and last fifth of the history (at least one entry each), so one
epoch's or one step's noise does not decide and a 2-epoch run compares epoch 1 with epoch 2. A run
with no losses (zero epochs or steps) trained nothing: it is not judged and is ok.

Too short to judge: every loss is measured BEFORE its step's update, so a run of one update has
only the starting model's loss (log K exactly for a new zero head), and a handful of updates cannot
be expected to lift the loss or the accuracy off chance (one batch-1 step of a new 10-class head has
seen one class). A run of fewer than ``MIN_UPDATES`` (10) optimizer updates is judged on rules 1
and 2 only and is ok otherwise (cause ``too-short``): a smoke test such as ``mcutrain run --steps 1``
or one epoch of a tiny dataset. ``updates`` defaults to the number of losses for a per-step
history (the C engine, one update each) and to "unknown, judge" for per-epoch ones, whose callers
pass it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

RISE_FACTOR = 3.0  # tail / head loss ratio that counts as "rose far above its start"
RISE_FLOOR = 0.5  # ... and only when the tail is above this fraction of log K
Z = 1.645  # one-sided 5% normal quantile of the chance-accuracy bound
PART = 5  # head and tail are the first and last 1/PART of the history
MIN_UPDATES = 10  # runs of fewer optimizer updates are judged on finiteness only
BLOWN_UP = 2.0  # x log K: a final loss above this blew up (the advice is a lower rate, not another one)


@dataclass(frozen=True)
class Health:
    """The verdict and the numbers behind it (``asdict`` is the ``health`` object of ``--json``)."""

    ok: bool
    reason: str  # one line; when ok "learned" or "not judged: ..." (too short to tell)
    cause: str  # "learned", "too-short" (ok), "parameters", "non-finite", "rise", "chance-loss", "chance-accuracy"
    classes: int
    chance_loss: float  # log K
    steps: int  # entries in the loss history
    updates: int | None  # optimizer updates behind them (None: not known)
    first_loss: float | None  # head mean
    final_loss: float | None  # tail mean
    val_accuracy: float | None
    val_n: int | None
    val_bound: float | None  # accuracy at or below which the run is at chance (None: not judged)

    def lr_advice(self, lr: float, flag: str = "--lr") -> str:
        """What to do about the learning rate. A loss that blew up (non-finite, risen, far above
        chance) means a rate too high; a loss or accuracy left at chance can be either (too low a
        rate never moves it, too high a one can pin it there)."""
        blew_up = self.cause in ("parameters", "non-finite", "rise") or (
            self.final_loss is not None and self.final_loss > BLOWN_UP * self.chance_loss)
        if blew_up:
            return f"lower {flag} (now {lr:g})"
        return f"try another {flag} (now {lr:g}: too low a rate leaves a run at chance, so can too high a one)"

    def to_dict(self) -> dict:
        """For JSON: a non-finite number becomes null (strict JSON has no NaN; ``reason`` names it)."""
        return {"failed": not self.ok, **{k: None if isinstance(v, float) and not math.isfinite(v) else v
                                          for k, v in asdict(self).items()}}


def judge(losses: Sequence[float], classes: int, *, val_accuracy: float | None = None, val_n: int | None = None,
          parameters_finite: bool = True, unit: str = "epoch", updates: int | None = None) -> Health:
    """Judge a run (module docstring). ``unit`` names a loss entry in the reason ("epoch", "step");
    ``updates``: the optimizer updates the run made (default: one per loss for "step", else unknown)."""
    if classes < 2:
        raise ValueError(f"a classifier has at least 2 classes, got {classes}")
    losses = [float(v) for v in losses]
    chance = math.log(classes)
    head, tail = _head_tail(losses)
    bound = chance_bound(classes, val_n) if val_accuracy is not None and losses else None
    if updates is None and unit == "step":
        updates = len(losses)
    numbers = dict(classes=classes, chance_loss=chance, steps=len(losses), updates=updates, first_loss=head,
                   final_loss=tail, val_accuracy=val_accuracy, val_n=val_n, val_bound=bound)
    cause, reason = _failure(losses, head, tail, classes, val_accuracy, val_n, bound, parameters_finite, unit,
                             updates)
    return Health(ok=cause in ("learned", "too-short"), reason=reason, cause=cause, **numbers)


def chance_bound(classes: int, n: int | None) -> float | None:
    """Accuracy at or below which n samples cannot tell a run from chance (None: n too small to tell)."""
    if not n or n < 1:
        return None
    p = 1.0 / classes
    bound = p + Z * math.sqrt(p * (1 - p) / n)
    return bound if bound < p + (1 - p) / 2 else None


def _head_tail(losses: list[float]) -> tuple[float | None, float | None]:
    if not losses:
        return None, None
    k = max(1, math.ceil(len(losses) / PART))
    return _mean(losses[:k]), _mean(losses[-k:])


def _mean(values: list[float]) -> float:
    # An infinite and a NaN entry would make a NaN mean; either way the mean is not finite.
    return math.fsum(values) / len(values) if all(math.isfinite(v) for v in values) else \
        next(v for v in values if not math.isfinite(v))


def _failure(losses: list[float], head, tail, classes: int, val_accuracy, val_n, bound, parameters_finite: bool,
             unit: str, updates: int | None) -> tuple[str, str]:
    """(cause, reason) of the first rule that fires, or ("learned", "learned")."""
    if not parameters_finite:
        return "parameters", "parameters are not finite (NaN or infinity)"
    if not losses:
        return "too-short", "not judged: nothing was trained"
    if not math.isfinite(tail):
        where = next(i for i in range(len(losses) - 1, -1, -1) if not math.isfinite(losses[i]))
        return "non-finite", f"the training loss became {losses[where]} ({unit} {where + 1} of {len(losses)})"
    if updates is not None and updates < MIN_UPDATES:
        return "too-short", f"not judged: {updates} update(s) are too few to expect learning (under {MIN_UPDATES})"
    level = _loss_level(head, tail, classes)
    if level is not None:
        return level
    if bound is not None and val_accuracy <= bound:
        return "chance-accuracy", (f"validation accuracy {val_accuracy * 100:.2f}% is at chance: not above "
                                   f"{bound * 100:.2f}%, what guessing 1 of {classes} classes reaches on "
                                   f"{val_n} samples 5% of the time")
    return "learned", "learned"


def _loss_level(head: float, tail: float, classes: int) -> tuple[str, str] | None:
    """Rules 3 and 4: the loss rose far above its start, or ended at or above chance level."""
    chance = math.log(classes)
    if tail > RISE_FACTOR * head and tail > RISE_FLOOR * chance:
        return "rise", (f"the training loss rose from {head:.4g} to {tail:.4g} (over {RISE_FACTOR:g}x its start; "
                        f"chance level log {classes} = {chance:.3f})")
    if tail >= chance:
        return "chance-loss", (f"the training loss ended at {tail:.4g}, not below chance level "
                               f"log {classes} = {chance:.3f}")
    return None
