"""The exact SRAM and Flash cost of a candidate scheme, fast enough for a search.

Why: the search must respect the budget in the number ``mcutrain compile`` prints (``peak_sram_bytes``
= ``report["total_sram_bytes"]`` of ``compile_training`` with its default options: arena + SRAM copies
of trained parameters + the engine's fixed state, ``ENGINE_STATE_BYTES``), not the paper's analytic estimate. A full ``compile_training`` takes 0.1-0.5 s
(bench/search_speed.py), mostly in work that number does not need or that a search repeats:

  * the inference stages (two of the three planned stages) do not enter ``total_sram_bytes``: only the
    training stage is built here, with the same passes and options as ``compile_training``, and without
    re-running the verifier after every pass (it returns its input unchanged or raises);
  * arena placement (``placement.plan_best``: greedy first fit, then up to 2000 seeded random orders) is
    the bulk of the rest. Its result is the smallest arena of a fixed sequence of orders, so "does the
    program fit in B bytes" is decided EXACTLY without running every order: no if even the lower bound
    of the arena does not fit, yes as soon as one order fits (``plan_best(enough=...)``); only a
    candidate that needs the full search to be refused runs all of it;
  * results are memoised per plan (a search revisits candidates).

``SramCost.exact`` gives the full, exact figures; ``SramCost.check`` the exact yes/no against budgets
(with the exact figures whenever they come for free). tests/search/test_search_cost.py checks both
against ``compile_training`` on random candidates.

The model is a zoo int8 model (``QModel``) or an imported graph (``GraphModel``): ``train.model_kind``
answers the differences (the convs a scheme addresses, the channel permutation, the frontend), the
rest is one code path (tests/search/test_search_graph.py checks a graph's figure against ``compile``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mcutrain.engine.autodiff import differentiate
from mcutrain.engine.compile import flash_constant_bytes, trainable_bytes
from mcutrain.engine.ir import Graph
from mcutrain.engine.lifetimes import buffers as arena_buffers
from mcutrain.engine.loss import append_loss
from mcutrain.engine.memory import DEFAULT_ALIGNMENT, ENGINE_STATE_BYTES, align_up, lower_bound
from mcutrain.engine.passes import PIPELINE, PassOptions
from mcutrain.engine.placement import plan_best
from mcutrain.sparse.scheme import Scheme
from mcutrain.train import model_kind as mk

# ``mcutrain compile``'s defaults (cli/cmd_compile.py); memory does not depend on lr or seed, but the
# program compiled here is then literally the one ``compile`` builds.
COMPILE_LR = 0.01
COMPILE_SEED = 0


@dataclass(frozen=True)
class Cost:
    """Exact figures of one candidate (bytes), as ``mcutrain compile`` reports them."""

    total_sram_bytes: int  # compile's peak_sram_bytes: arena + trainable copies + engine state
    arena_bytes: int
    trainable_bytes: int
    flash_bytes: int


@dataclass(frozen=True)
class Check:
    """Whether a candidate fits the budgets; ``sram_bytes`` is exact when ``exact`` is True, else a
    lower bound (refused by the arena's lower bound) or an upper bound (accepted by an order that fit)."""

    fits: bool
    sram_bytes: int
    flash_bytes: int
    exact: bool


@dataclass
class _Trained:
    """The scheduled training graph of one plan and what is known without placing its buffers."""

    buffers: tuple
    trainable: int
    flash: int


def scheme_key(scheme: Scheme) -> tuple:
    return scheme.bias_layers, scheme.weight_ratios


class SramCost:
    """Exact SRAM / Flash of schemes on one int8 model or graph (its input and head), memoised per plan."""

    def __init__(self, qmodel: mk.TrainableModel, *, lr: float = COMPILE_LR, seed: int = COMPILE_SEED):
        self.qmodel = qmodel
        self.table = mk.conv_table(qmodel)
        self.label = mk.label(qmodel)
        self.options = PassOptions(lr=lr, seed=seed, stream_input=True, row_fusion="auto")
        self._exact: dict[tuple, Cost] = {}
        self._graphs: dict[tuple, _Trained] = {}
        self.compiles = 0  # training graphs built (memo misses), for the benchmark

    # -- the exact figures
    def exact(self, scheme: Scheme) -> Cost:
        key = scheme_key(scheme)
        if key not in self._exact:
            t = self._trained(scheme)
            arena = plan_best(t.buffers).arena_bytes
            self._exact[key] = Cost(arena + t.trainable + ENGINE_STATE_BYTES, arena, t.trainable, t.flash)
        return self._exact[key]

    # -- the exact decision
    def check(self, scheme: Scheme, sram_budget: int, flash_budget: int | None = None) -> Check:
        """Does ``scheme`` fit ``sram_budget`` (and ``flash_budget``) in compile's figures? Exact."""
        key = scheme_key(scheme)
        if key in self._exact:
            c = self._exact[key]
            return Check(_within(c.total_sram_bytes, c.flash_bytes, sram_budget, flash_budget),
                         c.total_sram_bytes, c.flash_bytes, True)
        t = self._trained(scheme)
        fixed = t.trainable + ENGINE_STATE_BYTES  # what the arena shares the budget with
        floor = align_up(lower_bound(t.buffers), DEFAULT_ALIGNMENT) + fixed
        if floor > sram_budget or (flash_budget is not None and t.flash > flash_budget):
            return Check(False, floor, t.flash, False)
        plan = plan_best(t.buffers, enough=sram_budget - fixed)
        total = plan.arena_bytes + fixed
        if total > sram_budget:  # every order was tried: this is the full run's arena
            self._exact[key] = Cost(total, plan.arena_bytes, t.trainable, t.flash)
            return Check(False, total, t.flash, True)
        return Check(True, total, t.flash, False)

    def _trained(self, scheme: Scheme) -> _Trained:
        key = scheme_key(scheme)
        if key not in self._graphs:
            graph = self._train_graph(scheme)
            trainable = trainable_bytes(graph)
            constants = flash_constant_bytes(graph)
            self._graphs[key] = _Trained(arena_buffers(graph), trainable, constants - trainable)
            self.compiles += 1
        return self._graphs[key]

    def _train_graph(self, scheme: Scheme) -> Graph:
        """``compile_training``'s training stage graph: trace, loss, autodiff, the training passes."""
        plan = self.table.resolve(scheme)
        forward = mk.forward_graph(mk.prepared(self.qmodel, plan), plan)
        graph = differentiate(append_loss(forward), plan)
        for p in PIPELINE:
            graph = p(graph, self.options)
        return graph


def _within(sram: int, flash: int, sram_budget: int, flash_budget: int | None) -> bool:
    return sram <= sram_budget and (flash_budget is None or flash <= flash_budget)
