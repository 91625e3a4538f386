"""How ``passes.fuse_rows`` chooses its row pipelines: a small dynamic program over the frozen forward
prefix, each way to run a segment priced by the live bytes it needs and the extra work its folds do.

A fold (``row_schedule.plan_rows``) trades bytes for work twice over: its expand conv is recomputed for
every event whose window holds a row (``FoldShape.recomputed_macs``), and its input rows are read again
for every group of channels its window holds (``FoldShape.reread_inputs``; a narrow window is a small
buffer but many groups). So a segment's options are its fold sets (none, all, and, where it matters,
each subset), each priced with the widest window its slack under the limit surely pays for, and "auto"
takes the least work (recomputed MACs + re-read input elements: both about one multiply-accumulate's
worth on the int8 kernels). The chosen pipelines are then planned for real: the widest window that fits
and the rows each folded depthwise stage makes an event (``BATCHES``: more rows, fewer recomputed).

Split from ``passes/fuse_rows.py`` (which builds the fused ops and prices a segment, ``_Prefix``) to keep
each file one idea. ``prefix`` is that pass's ``_Prefix``: ``n``, ``floor``, ``cost``, ``foldable``,
``fold_shapes`` (``row_schedule.FoldShape``)."""

from __future__ import annotations

from itertools import combinations, product
from typing import NamedTuple

from mcutrain.engine.row_schedule import MAX_WINDOW_ROWS

NARROWEST = 0  # window bytes that hold one channel of each folded tensor (plan_rows' group is at least 1)
BATCHES = (1, 2, 4)  # output rows a folded depthwise stage may make an event (windows of <= MAX_WINDOW_ROWS)

class _Option(NamedTuple):
    """A way to run ops i..j: one unfused op (``folds`` None) or a pipeline folding ``folds``."""

    i: int
    j: int
    folds: tuple[str, ...] | None
    live: int  # bytes while it runs
    work: int  # extra work of its folds (``_estimated``; 0 until priced)
    window: int  # bytes of each folded tensor's window
    batches: tuple[int, ...]  # rows an event per fold: () for one each


def _option(prefix, i: int, j: int, folds, window: int = NARROWEST, batches: tuple[int, ...] = ()) -> _Option | None:
    """An option priced by its bytes only (its work: ``_estimated``, for the options under the limit)."""
    if (c := prefix.cost(i, j, folds, window, batches)) is None:
        return None
    return _Option(i, j, folds, c, 0, window, batches)


def _fits(prefix, i: int, j: int, folds, window: int, batches: tuple[int, ...], limit: int) -> bool:
    """Whether ops i..j run as that pipeline at all, and under ``limit``."""
    c = prefix.cost(i, j, folds, window, batches)
    return c is not None and c <= limit


def _fewest(fits, most: int) -> int:
    """The fewest n in 1..most with fits(n), by bisection (fits(most) holds; fits holds for every n above
    one it holds for: a window of more groups is never bigger)."""
    lo, hi = 1, most
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo


def _work(shapes, window: int) -> int:
    """Recomputed MACs + re-read input elements of folds with ``window`` bytes."""
    return sum(f.recomputed_macs + f.reread_inputs(window) for f in shapes)


def _window(shapes, groups: int) -> int:
    """Window bytes that hold every fold in at most ``groups`` groups of channels."""
    return max(f.window_for(groups) for f in shapes)


def _options(prefix, j: int, max_ops: int) -> list[_Option]:
    """The ways to run a segment ending at op j at their narrowest windows: one unfused op, a pipeline
    folding nothing, or every expanded tensor it can."""
    found = []
    for i in range(max(0, j - max_ops + 1), j + 1):
        every = prefix.foldable(i, j)
        found += [o for folds in [None, ()] + ([every] if every else []) if (o := _option(prefix, i, j, folds))]
    return found


def _partial_folds(prefix, j: int, limit: int, max_ops: int, max_folds: int) -> list[_Option]:
    """Pipelines ending at op j that fold some of their expanded tensors, where that can matter: folding
    all keeps under ``limit`` and folding none does not (a 7x7 stride-2 depthwise recomputes its expand
    conv 3.5 times per row, a 3x3 stride-1 one 3 times: which to fold is a choice). Larger sets first; a
    set is skipped when a set one bigger does not fit (folding less takes more bytes) or when its
    recomputed MACs alone are no less than the work of the cheapest set found (it cannot win)."""
    found = []
    for i in range(max(0, j - max_ops + 1), j + 1):
        every = prefix.foldable(i, j)
        if not 1 < len(every) <= max_folds or _fits(prefix, i, j, (), NARROWEST, (), limit):
            continue
        if (whole := _option(prefix, i, j, every)) is None or whole.live > limit:
            continue
        best, too_big = _estimated(prefix, whole, limit).work, set()
        for n in range(len(every) - 1, 0, -1):
            for folds in combinations(every, n):
                if any(set(folds) < big for big in too_big) or \
                        sum(f.recomputed_macs for f in prefix.fold_shapes(i, j, folds)) >= best:
                    continue
                option = _option(prefix, i, j, folds)
                if option is None or option.live > limit:
                    too_big.add(frozenset(folds))
                    continue
                option = _estimated(prefix, option, limit)
                found.append(option)
                best = min(best, option.work)
    return found


def _estimated(prefix, option: _Option, limit: int) -> _Option:
    """The option priced with the widest window its slack under ``limit`` surely pays for: a window of
    g channels adds at most (g - 1) channels' bytes per fold to the narrowest pipeline (packing only
    shares bytes). No planning, so every option of the search can be priced; ``_widest`` then plans
    the chosen ones."""
    if not option.folds or option.live > limit:
        return option
    shapes = prefix.fold_shapes(option.i, option.j, option.folds, option.batches)
    groups = _fewest(lambda n: sum(f.window_for(n) - f.channel_bytes for f in shapes) <= limit - option.live,
                     max(f.channels for f in shapes))
    window = _window(shapes, groups)
    return option._replace(work=_work(shapes, window), window=window)


def _widest(prefix, seg: tuple, limit: int) -> tuple:
    """(i, j, folds, window, batches): for each way to batch the folds (``BATCHES`` each), the widest
    window that keeps the pipeline under ``limit`` (bytes under the program's peak cost nothing; fewer,
    wider groups re-read the expand conv's input less), by bisection over the groups per folded tensor
    (a window of n groups is never bigger than one of n - 1); then the least work. A batch of b output
    rows an event makes the k - stride rows its windows share once instead of b times, for b - 1 more
    rows of the depthwise output's ring and (b - 1) * stride of the expand input's."""
    i, j, folds = seg[:3]
    if not folds:
        return seg
    best = (_work(prefix.fold_shapes(i, j, folds), NARROWEST), (), NARROWEST)  # what the choice was made at
    for b in product(BATCHES, repeat=len(folds)):
        shapes = prefix.fold_shapes(i, j, folds, b)
        most = max(f.channels for f in shapes)
        fits = lambda n: _fits(prefix, i, j, folds, _window(shapes, n), b, limit)  # noqa: E731
        if any(f.channel_bytes > MAX_WINDOW_ROWS * f.width for f in shapes) or not fits(most):
            continue
        window = _window(shapes, _fewest(fits, most))
        best = min(best, (_work(shapes, window), b, window))
    return (i, j, folds, best[2], best[1])


def _solve(options: list[list[_Option]], limit: int | None):
    """(peak, fused ops, work) and the segments (i, j, folds, window, batches) of the best cover of ops 0..n-1:
    the lowest peak (``limit`` None), else under ``limit`` the least work, then the fewest fused ops."""
    n = len(options)
    best: list[tuple[int, int, int] | None] = [(0, 0, 0)] + [None] * n
    back: list[tuple | None] = [None] * (n + 1)
    key = (lambda st: st) if limit is None else (lambda st: (st[2], st[1], st[0]))  # noqa: E731
    for j in range(n):
        for i, _, folds, c, work, window, batches in options[j]:
            if best[i] is None or (limit is not None and c > limit):
                continue
            peak, count, done = best[i]
            state = (max(peak, c), count + (j - i + 1 if folds is not None else 0), done + work)
            if best[j + 1] is None or key(state) < key(best[j + 1]):
                best[j + 1], back[j + 1] = state, (i, j, folds, window, batches)
    if best[n] is None:
        return None, None
    segs, j = [], n
    while j > 0:
        segs.append(back[j])
        j = back[j][0]
    return best[n], segs[::-1]


def choose(prefix, mode: str, max_ops: int, max_folds: int) -> list[tuple]:
    """Segments (i, j, folds or None, window bytes, batches) covering ops 0..n-1: the lowest peak ("max",
    windows of one channel; ties: fewer fused ops), or, among segmentations whose peak stays under
    max(lowest peak, the rest of the program's peak), the least extra work of folds and then the fewest
    fused ops ("auto")."""
    if prefix.n == 0:
        return []
    options = [_options(prefix, j, max_ops) for j in range(prefix.n)]
    lowest, segs = _solve(options, None)
    if mode == "max" or segs is None:
        return segs or []
    limit = max(lowest[0], prefix.floor)
    priced = [[_estimated(prefix, o, limit) for o in opts] for opts in options]
    best, auto = _solve(priced, limit)
    if auto is not None and best[2] > 0:  # folds are needed: which ones is a choice (most programs need none)
        for j in range(prefix.n):
            priced[j] += _partial_folds(prefix, j, limit, max_ops, max_folds)
        _, auto = _solve(priced, limit)
    return [_widest(prefix, seg, limit) for seg in auto] if auto is not None else segs
