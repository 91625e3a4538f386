"""Channel permutation for a sparse-update plan: the channels worth updating become the FIRST ones.

The paper's reference simulation updated a layer's top-magnitude channels while its device code
updated the first k channels (DESIGN.md sections 5 and 10). mcutrain reorders channels once, when a
model is prepared for a scheme, so that every executor (simulation, NumPy, C) simply updates the
first ``kept_channels`` channels and they are the important ones everywhere.

Reordering channels consistently changes no integer: every conv sums its input channels exactly,
activations, residual adds and the global pool are per tensor or per channel, so the permuted model's
logits are bit-identical to the original's.

Channel groups
    Channels that must move together form a group. ``channel_groups`` finds them from the QModel's
    structure with a union-find over "ports" (each conv's input and output channels, the network
    input, the classifier input), joining the ports that are the same tensor's channels:
      * a depthwise conv's input and output channels (one channel = one filter);
      * pointwise1's input, or in a block without pointwise1 the depthwise input, with the block input;
      * pointwise1's output with the depthwise input, the depthwise output with pointwise2's input;
      * in a residual block (``add``), pointwise2's output with the block input: the stream goes on;
        in a block without ``add`` the stream is pointwise2's output (a new stream begins);
      * the classifier input with the last stream (the global pool is per channel);
      * first_conv's input with the network input, which is fixed (the image's RGB order).
    So the groups are the block-local mid channels (pw1 out / dw / pw2 in) and the streams between
    blocks (a residual chain: the pw2 or first_conv that starts it, every residual block's pw2 output,
    and every reader of the stream).

Importance
    Channel j of a weight-updated conv matters by the L2 norm of its weight slice in real units,
    ``w_q * w_scale`` (pointwise/normal: the input column ``w[:, j]``; depthwise: ``w[j]``), normalised
    to sum 1 per conv. Real units, not the stored integers: weights are quantized symmetric per output
    channel with max |w_q| = 127, so the integer norms of depthwise channels hide exactly the magnitude
    that distinguishes them, and a degenerate channel (w_scale ~ 0, frozen) has tiny real norm and
    sorts last. A group's order is the stable descending sort of the importances summed over the convs
    that read it partially (weight-updated with ``kept_channels < channels``); a reader updating all
    its channels does not care about order and does not vote. A group no partial reader reads keeps
    the identity, as does the network input (first_conv's input channels are never permuted; a
    partial first_conv update is listed under ``unpermuted`` in the record).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mcutrain.quant.qmodel import QBlock, QConv, QLinear, QModel
from mcutrain.sparse.errors import SchemeError
from mcutrain.sparse.scheme import UpdatePlan

CLASSIFIER = "classifier"


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be permuted as one. Conv indices are the paper's forward conv index;
    a depthwise conv appears in both ``convs_out`` and ``convs_in``."""

    channels: int
    convs_out: tuple[int, ...]  # convs whose output channels are this group (rows, bias, w_scale)
    convs_in: tuple[int, ...]  # convs whose input channels are this group (columns; depthwise: rows)
    classifier: bool  # the classifier's input columns are this group
    fixed: bool  # the network input: cannot be permuted


def channel_groups(model: QModel) -> list[ChannelGroup]:
    """The channel groups of ``model`` in order of their first port (see the module docstring)."""
    convs = model.convs()
    n = len(convs)
    image, cls = 2 * n, 2 * n + 1
    parent = list(range(2 * n + 2))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    def port_in(i: int) -> int:
        return 2 * i

    def port_out(i: int) -> int:
        return 2 * i + 1

    union(port_in(0), image)
    stream, k = port_out(0), 1
    for block in model.blocks:
        block_in = stream
        if block.pointwise1 is not None:
            union(port_in(k), block_in)
            x, k = port_out(k), k + 1
        else:
            x = block_in
        dw = k
        union(port_in(dw), x)
        union(port_in(dw), port_out(dw))
        pw2 = k + 1
        union(port_in(pw2), port_out(dw))
        k += 2
        if block.add is not None:
            union(port_out(pw2), block_in)
        else:
            stream = port_out(pw2)
    union(cls, stream if model.blocks else port_out(0))
    if k != n:
        raise ValueError(f"{model.spec.name}: walked {k} convs, the model has {n}")

    for i, c in enumerate(convs):
        if c.depthwise and not (c.weight.shape[1] == 1 and c.in_ch == c.out_ch):
            raise ValueError(f"{c.name}: only depthwise grouped convs can be permuted (groups={c.groups})")

    members: dict[int, dict] = {}
    for node in range(2 * n + 2):
        g = members.setdefault(find(node), {"out": [], "in": [], "cls": False, "fixed": False, "sizes": set()})
        if node == image:
            g["fixed"] = True
            g["sizes"].add(convs[0].in_ch)
        elif node == cls:
            g["cls"] = True
            g["sizes"].add(model.classifier.weight.shape[1])
        else:
            i, is_out = divmod(node, 2)
            g["out" if is_out else "in"].append(i)
            g["sizes"].add(convs[i].out_ch if is_out else convs[i].in_ch)
    groups = []
    for root in sorted(members):
        g = members[root]
        if len(g["sizes"]) != 1:
            names = [convs[i].name for i in sorted(set(g["out"] + g["in"]))]
            raise ValueError(f"{model.spec.name}: channel group of {names} has inconsistent sizes {sorted(g['sizes'])}")
        groups.append(ChannelGroup(channels=g["sizes"].pop(), convs_out=tuple(sorted(g["out"])),
                                   convs_in=tuple(sorted(g["in"])), classifier=g["cls"], fixed=g["fixed"]))
    return groups


def channel_importance(conv: QConv) -> np.ndarray:
    """Per updated channel (input channel of a pointwise/normal conv, channel of a depthwise conv):
    the L2 norm of its real-valued weight slice, normalised to sum 1 (all zeros stay zeros)."""
    w = conv.weight.astype(np.float64) * conv.w_scale.astype(np.float64)[:, None, None, None]
    axes = (1, 2, 3) if conv.depthwise else (0, 2, 3)
    norms = np.sqrt(np.sum(w * w, axis=axes))
    total = norms.sum()
    return norms / total if total > 0 else norms


def permute_for_plan(model: QModel, plan: UpdatePlan) -> tuple[QModel, dict]:
    """A functionally identical model whose channel order puts, for every partially weight-updated
    conv, its most important channels first; and a JSON-able record of the permutations applied.

    The record is ``{"importance": ..., "groups": [{"convs_out": [names], "convs_in": [names],
    "order": [old channel at each new position]}, ...]}`` for the non-identity groups only (the
    classifier appears in ``convs_in`` as ``"classifier"``), plus ``"unpermuted": [names]`` when a
    partially updated conv reads the network input, whose channels cannot move.
    Arrays are copied, never mutated; a plan that permutes nothing returns ``model`` itself.
    """
    convs = model.convs()
    _check_plan(model, convs, plan)
    partial = [u for u in plan.convs if u.updates_weight and u.kept_channels < u.channels]
    reads = {u.index for u in partial}

    out_order: dict[int, np.ndarray] = {}
    in_order: dict[int, np.ndarray] = {}
    cls_order = None
    record_groups, unpermuted = [], []
    for group in channel_groups(model):
        readers = [i for i in group.convs_in if i in reads]
        if not readers:
            continue
        if group.fixed:
            unpermuted += [convs[i].name for i in readers]
            continue
        score = np.zeros(group.channels, np.float64)
        for i in readers:
            score += channel_importance(convs[i])
        order = np.argsort(-score, kind="stable")
        if np.array_equal(order, np.arange(group.channels)):
            continue
        for i in group.convs_out:
            out_order[i] = order
        for i in group.convs_in:
            in_order[i] = order
        if group.classifier:
            cls_order = order
        record_groups.append({
            "convs_out": [convs[i].name for i in group.convs_out],
            "convs_in": [convs[i].name for i in group.convs_in] + ([CLASSIFIER] if group.classifier else []),
            "order": [int(j) for j in order],
        })

    record: dict = {"importance": "l2 of w_q*w_scale per channel, per conv sum 1, summed over partial readers",
                    "groups": record_groups}
    if unpermuted:
        record["unpermuted"] = unpermuted
    if not record_groups:
        return model, record

    new_convs = [_permute_conv(c, out_order.get(i), in_order.get(i)) for i, c in enumerate(convs)]
    it = iter(new_convs)
    first = next(it)
    blocks = []
    for qb in model.blocks:
        pw1 = next(it) if qb.pointwise1 is not None else None
        blocks.append(QBlock(pointwise1=pw1, depthwise=next(it), pointwise2=next(it), add=qb.add))
    classifier = _permute_classifier(model.classifier, cls_order)
    return replace(model, first_conv=first, blocks=tuple(blocks), classifier=classifier), record


def _check_plan(model: QModel, convs: list[QConv], plan: UpdatePlan) -> None:
    if plan.model != model.spec.name:
        raise SchemeError(f"plan {plan.scheme!r} is for model {plan.model!r}; it cannot permute a "
                          f"{model.spec.name!r} model")
    if len(plan.convs) != len(convs):
        raise SchemeError(f"plan {plan.scheme!r} has {len(plan.convs)} convs, the model {len(convs)}")
    for u, c in zip(plan.convs, convs):
        # A plan made for 3 input channels also trains a model of 1-channel images (its first conv
        # keeps at most what it has); the input's channels are never permuted.
        fewer_input_channels = c is model.first_conv and c.in_ch < u.channels
        if u.name != c.name or (u.channels != c.in_ch and not fewer_input_channels):
            raise SchemeError(f"plan {plan.scheme!r}: conv {u.index} is {u.name} with {u.channels} channels, "
                              f"the model's is {c.name} with {c.in_ch}")


def _permute_conv(conv: QConv, out: np.ndarray | None, inp: np.ndarray | None) -> QConv:
    if conv.depthwise:
        out = out if out is not None else inp  # one channel set: input = output
        inp = None
    if out is None and inp is None:
        return conv
    weight, bias, w_scale, frozen = conv.weight, conv.bias, conv.w_scale, conv.frozen_channels
    if out is not None:
        weight, bias, w_scale = weight[out], bias[out], w_scale[out]
        inverse = np.argsort(out)
        frozen = tuple(sorted(int(inverse[c]) for c in frozen))
    if inp is not None:
        weight = weight[:, inp]
    return replace(conv, weight=np.array(weight, order="C"), bias=np.array(bias, order="C"),
                   w_scale=np.array(w_scale, order="C"), frozen_channels=frozen)


def _permute_classifier(classifier: QLinear, order: np.ndarray | None) -> QLinear:
    if order is None:
        return classifier
    return replace(classifier, weight=np.array(classifier.weight[:, order], order="C"),
                   bias=classifier.bias.copy(), w_scale=classifier.w_scale.copy())


def prepare_model(model: QModel, plan: UpdatePlan) -> QModel:
    """The model every executor trains for ``plan``: channels permuted, the permutation recorded."""
    permuted, record = permute_for_plan(model, plan)
    if not record["groups"]:
        return permuted
    return replace(permuted, provenance={**permuted.provenance, "permutation": record})
