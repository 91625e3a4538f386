"""User-facing errors.

Every error a user can cause (bad path, bad data, foreign file, scheme over budget) is raised as a
subclass of ``McutrainError`` with a message that says what was wrong and what to do. The CLI prints
the message (no traceback) and exits with the error's ``exit_code``; anything else is a bug and keeps
its traceback. Exit codes:

  2  bad input: the command could not do what was asked (a wrong path, bad data, a bad setting);
  3  training ran but failed to learn (``TrainingFailed``, judged by ``mcutrain.train.health``):
     the loss became non-finite, rose far above its start or stayed at chance level (log K), or the
     validation accuracy ended at chance. Nothing was written unless ``--keep-failed`` was given.
"""


class McutrainError(Exception):
    """Base class for errors caused by the user's input, not by a bug.

    ``log``: a longer text that explains the error (a compiler's or an emulator's output), printed
    by the CLI before the one-line message, so the message stays the last line and one line."""

    exit_code = 2

    def __init__(self, message: str = "", *, log: str = "") -> None:
        super().__init__(message)
        self.log = log


def one_line(text: str) -> str:
    """``text`` on one line: control characters (a newline in a user's folder name, say) escaped as
    Python would show them, so an error message is always exactly one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class DataError(McutrainError):
    """A dataset is missing, malformed or inconsistent."""


class CheckpointError(McutrainError):
    """A checkpoint or model file is corrupt, foreign, or does not match its architecture."""


class ModelError(McutrainError):
    """An unknown model name or an unsupported architecture."""


class TrainingFailed(McutrainError):
    """Training ran but did not learn (``mcutrain.train.health``): exit status 3, not 2, so a script
    can tell a run to retry with other settings (a lower --lr) from a command that was wrong.

    ``result``: what the run measured (with its ``health`` object), printed by ``--json`` before the
    one-line message; None where the run stopped before it had one."""

    exit_code = 3

    def __init__(self, message: str = "", *, result: dict | None = None, log: str = "") -> None:
        super().__init__(message, log=log)
        self.result = result
