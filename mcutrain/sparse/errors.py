"""The sparse package's user-facing error (kept here, next to the code that raises it)."""

from mcutrain.errors import McutrainError


class SchemeError(McutrainError):
    """A sparse-update scheme is malformed, names unknown layers, or does not fit its model."""
