"""The one error type of code generation (a program the C target cannot run, a failed build)."""

from mcutrain.errors import McutrainError


class CodegenError(McutrainError):
    """The program cannot be turned into C (an op kind without a C kernel, a streamed input, an
    unsupported shape), or the host build or run failed."""
