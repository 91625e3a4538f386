"""User-facing errors.

Every error a user can cause (bad path, bad data, foreign file, scheme over budget) is raised as a
subclass of ``McutrainError`` with a message that says what was wrong and what to do. The CLI prints
the message (no traceback) and exits with status 2; anything else is a bug and keeps its traceback.
"""


class McutrainError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class DataError(McutrainError):
    """A dataset is missing, malformed or inconsistent."""


class CheckpointError(McutrainError):
    """A checkpoint or model file is corrupt, foreign, or does not match its architecture."""


class ModelError(McutrainError):
    """An unknown model name or an unsupported architecture."""
