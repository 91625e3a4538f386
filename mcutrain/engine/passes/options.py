"""What the passes need to know beyond the graph: the training hyper-parameters of the device step."""

from __future__ import annotations

from dataclasses import dataclass

from mcutrain.errors import McutrainError
from mcutrain.quant.int8_grad import BACKWARDS

RULES = ("sr",)
ROW_FUSION = ("auto", "max", "off")


@dataclass(frozen=True)
class PassOptions:
    """SGD at batch 1 without momentum (the device step): learning rate, RNG seed, update rule, QAS.

    ``rule`` is "sr" (int8 weights rounded stochastically, int32 biases to nearest): the one rule the
    engine compiles; the simulation's "latent" mode exists only there, for comparison.
    """

    lr: float = 0.01
    seed: int = 0
    rule: str = "sr"
    qas: bool = True
    # Memory layout choices (passes/fuse_rows): stream the image row by row instead of holding it in the
    # arena; how far to fuse the frozen forward prefix into row pipelines ("auto": as far as lowers the
    # program's peak, "max": the lowest prefix peak, "off"); an explicit segmentation (graph op names per
    # pipeline, the expanded tensors it folds, their window bytes and rows an event each) that overrides
    # the search (the inference program reuses the training program's).
    stream_input: bool = True
    row_fusion: str = "auto"
    row_segments: tuple[tuple[tuple[str, ...], tuple[str, ...], int, tuple[int, ...]], ...] | None = None
    # The backward's arithmetic: "float32" (the simulation's float gradients) or "int8" (issue 16: int8
    # gradients with a per-tensor power-of-two exponent, int32 parameter gradients, fixed-point updates;
    # ``quant.int8_grad``, lowered by ``passes/int8_backward``). Here, beside lr and seed, because the
    # passes are what it changes and the Program keeps its options (codegen reads it from there).
    backward: str = "float32"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise McutrainError(f"update rule {self.rule!r} cannot be compiled; the engine supports {RULES}")
        if not 0 <= int(self.seed) < 2**32 or int(self.seed) != self.seed:
            raise McutrainError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if self.row_fusion not in ROW_FUSION:
            raise McutrainError(f"row_fusion must be one of {ROW_FUSION}, got {self.row_fusion!r}")
        if self.backward not in BACKWARDS:
            raise McutrainError(f"backward must be one of {BACKWARDS}, got {self.backward!r}")
        if not self.lr > 0:
            raise McutrainError(f"learning rate must be > 0, got {self.lr!r}")
