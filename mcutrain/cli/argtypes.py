"""Argument types shared by the subcommands: one parser per kind of value, so a rule (such as what a
learning rate may be) is checked the same way by every command that takes one.

Each type raises ``argparse.ArgumentTypeError``: argparse then prints the usage and one line naming
the option and the problem, and exits with status 2, before any work starts.
"""

from __future__ import annotations

import argparse

from mcutrain.train.learning_rate import learning_rate_problem


def learning_rate(text: str) -> float:
    """``--lr``: a finite number > 0 within float32's range (``mcutrain.train.learning_rate``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    problem = learning_rate_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


learning_rate.__name__ = "learning rate"  # argparse names the type in "invalid <name> value" messages


def learning_rate_or_auto(text: str) -> float | str:
    """``--lr`` where ``auto`` is allowed: the rate chosen from the model and data (train/lr_auto.py)."""
    from mcutrain.train.lr_auto import AUTO

    return AUTO if text.strip().lower() == AUTO else learning_rate(text)


learning_rate_or_auto.__name__ = "learning rate"


def resolution(text: str) -> int:
    """``--resolution``: an input side in the architectures' range (``models.spec_file``), or 0 for
    the model's own; checked before anything is built, so a side of 100000 never sizes a tensor."""
    from mcutrain.models.spec_file import MAX_RESOLUTION, MIN_RESOLUTION

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r:.40}") from None
    if value != 0 and not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        raise argparse.ArgumentTypeError(f"must be {MIN_RESOLUTION}..{MAX_RESOLUTION} pixels "
                                         f"(or 0: the model's own), got {value}")
    return value
