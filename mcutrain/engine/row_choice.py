"""How ``passes.fuse_rows`` chooses its row pipelines: a small dynamic program over the frozen forward
prefix, each way to run a segment priced by the live bytes it needs and the MACs its folds recompute.

Split from ``passes/fuse_rows.py`` (which builds the fused ops and prices a segment, ``_Prefix``) to keep
each file one idea. ``prefix`` is that pass's ``_Prefix``: ``n``, ``floor``, ``cost``, ``foldable``,
``recompute``, ``whole_window``."""

from __future__ import annotations

from itertools import combinations

from mcutrain.engine.row_schedule import FOLD_BYTES


def _options(prefix, j: int, max_ops: int) -> list[tuple[int, int, tuple[str, ...] | None, int, int]]:
    """The ways to run a segment ending at op j: (i, j, folds or None for one unfused op, live bytes,
    recomputed MACs), a pipeline folding nothing or every expanded tensor it can."""
    found = []
    for i in range(max(0, j - max_ops + 1), j + 1):
        every = prefix.foldable(i, j)
        for folds in [None, ()] + ([every] if every else []):
            if (c := prefix.cost(i, j, folds)) is not None:
                found.append((i, j, folds, c, prefix.recompute(i, j, folds or ())))
    return found


def _partial_folds(prefix, j: int, limit: int, max_ops: int, max_folds: int) -> list[tuple[int, int, tuple[str, ...], int, int]]:
    """Pipelines ending at op j that fold some of their expanded tensors, where that can matter: folding
    all keeps under ``limit`` and folding none does not. Then the cheapest set to recompute wins (a 7x7
    depthwise recomputes its expand conv 3.5 times per row, a 3x3 stride-1 one 3 times), not all."""
    found = []
    for i in range(max(0, j - max_ops + 1), j + 1):
        every = prefix.foldable(i, j)
        if not 1 < len(every) <= max_folds or (prefix.cost(i, j, every) or limit + 1) > limit:
            continue
        if (prefix.cost(i, j, ()) or limit + 1) <= limit:
            continue
        for folds in (c for n in range(1, len(every)) for c in combinations(every, n)):
            if (c := prefix.cost(i, j, folds)) is not None and c <= limit:
                found.append((i, j, folds, c, prefix.recompute(i, j, folds)))
    return found


def choose(prefix, mode: str, max_ops: int, max_folds: int) -> list[tuple[int, int, tuple[str, ...] | None]]:
    """Segments (i, j, folds) covering ops 0..n-1: the lowest peak ("max"), or, among segmentations whose
    peak stays under max(lowest peak, the rest of the program's peak), the fewest recomputed MACs (a
    fold recomputes its expand conv) and then the fewest fused ops ("auto"). Ties: lower peak, fewer fused
    ops, fewer recomputed MACs."""
    n = prefix.n
    if n == 0:
        return []
    options = [_options(prefix, j, max_ops) for j in range(n)]

    def solve(limit: int | None):
        # state after ops 0..j-1: (peak, fused ops, recomputed MACs), ordered as ``key`` says
        best: list[tuple[int, int, int] | None] = [(0, 0, 0)] + [None] * n
        back: list[tuple | None] = [None] * (n + 1)
        key = (lambda st: st) if limit is None else (lambda st: (st[2], st[1], st[0]))  # noqa: E731
        for j in range(n):
            for i, _, folds, c, macs in options[j]:
                if best[i] is None or (limit is not None and c > limit):
                    continue
                peak, count, recomputed = best[i]
                state = (max(peak, c), count + (j - i + 1 if folds is not None else 0), recomputed + macs)
                if best[j + 1] is None or key(state) < key(best[j + 1]):
                    best[j + 1], back[j + 1] = state, (i, j, folds)
        if best[n] is None:
            return None, None
        segs, j = [], n
        while j > 0:
            segs.append(back[j])
            j = back[j][0]
        return best[n], segs[::-1]

    lowest, segs = solve(None)
    if mode == "max" or segs is None:
        return [(*seg, FOLD_BYTES) for seg in segs or []]
    limit = max(lowest[0], prefix.floor)
    for j in range(n):
        options[j] += _partial_folds(prefix, j, limit, max_ops, max_folds)
    _, auto = solve(limit)
    return [_widest_window(prefix, seg, limit) for seg in (auto if auto is not None else segs)]


def _widest_window(prefix, seg: tuple, limit: int) -> tuple:
    """(i, j, folds, window bytes): a folding pipeline's windows grown while it stays under ``limit``.

    Why: a window of a few channels makes the expand conv's input rows be read (and widened) again for
    every few channels; bytes under the program's peak cost nothing, so the window takes what is there
    (doubling, up to every channel of the widest folded tensor)."""
    i, j, folds = seg
    if not folds:
        return (i, j, folds, FOLD_BYTES)
    whole = prefix.whole_window(i, j, folds)
    window = FOLD_BYTES
    while window < whole and (prefix.cost(i, j, folds, 2 * window) or limit + 1) <= limit:
        window *= 2
    return (i, j, folds, window)
