"""Architectures as plain data: the three networks of the paper plus a tiny one for fast tests.

Written from the facts in ../shared/upstream/README.md ("Architectures"): a stride-2 3x3 first conv,
then inverted-residual blocks (pointwise expand -> depthwise -> pointwise project), an identity
residual wherever a block keeps its channels and resolution, global average pool, linear classifier.
Block 0 of every network has no expand conv. Specs are frozen so that a spec can key caches.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block. ``mid_ch is None`` means no pointwise expand (block 0)."""

    in_ch: int
    mid_ch: int | None
    out_ch: int
    kernel: int
    stride: int

    @property
    def dw_ch(self) -> int:
        return self.in_ch if self.mid_ch is None else self.mid_ch

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch


@dataclass(frozen=True)
class NetSpec:
    name: str
    stem_ch: int
    blocks: tuple[BlockSpec, ...]
    default_resolution: int = 128
    in_ch: int = 3
    stem_kernel: int = 3
    stem_stride: int = 2

    @property
    def feature_ch(self) -> int:
        return self.blocks[-1].out_ch


def _chain(stem_ch: int, rows: list[tuple[int | None, int, int, int]]) -> tuple[BlockSpec, ...]:
    """Blocks from (mid, out, kernel, stride) rows; each block's input is the previous output."""
    blocks, in_ch = [], stem_ch
    for mid, out, kernel, stride in rows:
        blocks.append(BlockSpec(in_ch, mid, out, kernel, stride))
        in_ch = out
    return tuple(blocks)


MCUNET_5FPS = NetSpec("mcunet-5fps", 16, _chain(16, [
    (None, 8, 3, 1), (32, 16, 3, 2), (48, 16, 3, 1), (48, 24, 7, 2), (120, 24, 3, 1),
    (120, 40, 3, 2), (160, 40, 7, 1), (160, 48, 5, 1), (144, 48, 3, 1), (192, 48, 3, 1),
    (240, 96, 7, 2), (384, 96, 5, 1), (384, 96, 5, 1), (576, 160, 3, 1),
]))

MBV2_W035 = NetSpec("mbv2-w0.35", 16, _chain(16, [
    (None, 8, 3, 1), (48, 8, 3, 2), (48, 8, 3, 1), (48, 16, 3, 2), (96, 16, 3, 1),
    (96, 16, 3, 1), (96, 24, 3, 2), (144, 24, 3, 1), (144, 24, 3, 1), (144, 24, 3, 1),
    (144, 32, 3, 1), (192, 32, 3, 1), (192, 32, 3, 1), (192, 56, 3, 2), (336, 56, 3, 1),
    (336, 56, 3, 1), (336, 112, 3, 1),
]))

PROXYLESS_W03 = NetSpec("proxyless-w0.3", 16, _chain(16, [
    (None, 8, 3, 1), (24, 16, 5, 2), (48, 16, 3, 1), (48, 16, 7, 2), (48, 16, 3, 1),
    (48, 16, 5, 1), (48, 16, 5, 1), (96, 24, 7, 2), (72, 24, 5, 1), (72, 24, 5, 1),
    (72, 24, 5, 1), (144, 32, 5, 1), (96, 32, 5, 1), (96, 32, 5, 1), (96, 32, 5, 1),
    (192, 64, 7, 2), (384, 64, 7, 1), (192, 64, 7, 1), (192, 64, 7, 1), (384, 96, 7, 1),
]))

# Small enough for unit tests to train in seconds; has every feature the big ones have
# (no-expand block 0, stride 2, residuals, kernels 3/5/7).
TINY = NetSpec("tiny", 8, _chain(8, [
    (None, 8, 3, 1), (16, 8, 3, 2), (24, 8, 5, 1), (24, 16, 7, 2), (32, 16, 3, 1),
]), default_resolution=32)

PAPER_SPECS = (MCUNET_5FPS, MBV2_W035, PROXYLESS_W03)
ALL_SPECS = PAPER_SPECS + (TINY,)
