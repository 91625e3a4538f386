"""User-facing errors.

Every error a user can cause (bad path, bad data, foreign file, scheme over budget) is raised as a
subclass of ``McutrainError`` with a message that says what was wrong and what to do. The CLI prints
the message (no traceback) and exits with status 2; anything else is a bug and keeps its traceback.
"""


class McutrainError(Exception):
    """Base class for errors caused by the user's input, not by a bug.

    ``log``: a longer text that explains the error (a compiler's or an emulator's output), printed
    by the CLI before the one-line message, so the message stays the last line and one line."""

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
