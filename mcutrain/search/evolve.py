"""Evolutionary search for a sparse-update scheme under a memory budget (DESIGN.md section 5).

The paper maximises dAcc_bias[k] + sum dAcc_W[i, r] (the contribution analysis, ``contrib``) subject to
Memory(k, {i, r}) <= budget, by evolution, and reports that evolution beats random search; it released
neither. Here the memory is the EXACT figure ``mcutrain compile`` reports (``cost.SramCost``: total SRAM
= arena + trainable copies, and Flash), and the budget is a hard constraint: a scheme over it is never
returned (the classifier-only scheme, the smallest, is the fallback and is evaluated first).

A candidate (``Genome``) is a bias depth k (the last k convs) and a weight ratio for some of the analysed
convs; a weight-updated conv must be bias-updated, so k is raised to cover the deepest weight
("repair"). Evolution: a random population, then per generation the best quarter are parents; half the
children are mutations of a parent (k moved, each analysed conv's choice redrawn with probability
``mutation_rate``), half crossovers of two parents (k and each conv's choice from either), mutated
lightly; the next population is the best of parents and children (elitism). Ranking: feasible before
infeasible; feasible by predicted gain (ties: less SRAM); infeasible by SRAM (closer to the budget).
Random search draws from the same sampler as the initial population, for the same number of distinct
evaluations. Everything is drawn from ``random.Random(seed)``: the same inputs give the same scheme.

Noise: ``SearchConfig.noise_z`` (``--noise-z``) first shrinks every measured delta by z of its standard
error (``contrib.shrunk``: the spread over paired seeds where the analysis ran ``--seeds`` >= 2, else a
binomial approximation; ``SearchOutcome.noise`` says which), so that the sum is not inflated by many
small deltas that are measurement noise; z = 0 is the paper's plain sum. The default stays z = 0: in
experiments/search_validation.py (docs/results/search_validation.md) z = 0.5, 1 and 2 gave smaller schemes
but no better verdicts than the plain sum (the fine-tunes that judge them are as noisy as the analysis).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from tqdm import tqdm

from mcutrain.errors import McutrainError
from mcutrain.search.budget import check_minimum
from mcutrain.search.contrib import Contrib, bias_gain, noise_source, predicted_gain, shrunk
from mcutrain.search.cost import Cost, SramCost
from mcutrain.sparse.scheme import Scheme

Choice = tuple[tuple[int, float], ...]  # ((conv index, ratio), ...) sorted
DEFAULT_NOISE_Z = 0.0  # the plain sum: the shrunk objective was not better (module docstring)


@dataclass(frozen=True)
class Genome:
    bias_k: int
    weights: Choice

    def scheme(self, model: str, n_convs: int, name: str = "searched") -> Scheme:
        return Scheme(model, name, tuple(range(n_convs - self.bias_k, n_convs)), self.weights)


@dataclass(frozen=True)
class SearchConfig:
    sram_budget: int
    flash_budget: int | None = None
    population: int = 40
    generations: int = 25
    seed: int = 0
    mutation_rate: float = 0.15
    parent_fraction: float = 0.25
    noise_z: float = DEFAULT_NOISE_Z  # shrink each delta by z standard errors (0: the plain sum)

    @property
    def evaluations(self) -> int:
        """Distinct candidates each method may evaluate (the classifier-only start included)."""
        return self.population * self.generations


@dataclass
class Evaluated:
    genome: Genome
    feasible: bool
    gain: float
    sram_bytes: int  # exact for feasible candidates only when ``exact``; see cost.Check

    def rank(self) -> tuple:
        return (0, -self.gain, self.sram_bytes) if self.feasible else (1, self.sram_bytes, -self.gain)


@dataclass
class SearchResult:
    method: str
    best: Evaluated
    history: list[float] = field(default_factory=list)  # best feasible gain after each evaluation
    evaluations: int = 0
    evaluated: list[Evaluated] = field(default_factory=list)  # every distinct candidate, in order


class Space:
    """The candidates the analysis can score: bias depth 0..n, and the analysed (conv, ratio) pairs."""

    def __init__(self, contrib: Contrib):
        self.contrib = contrib
        self.n = contrib.n_convs
        self.layers = sorted(contrib.weight)
        self.ratios = {i: sorted(contrib.weight[i]) for i in self.layers}

    def gain(self, g: Genome) -> float:
        """``contrib.predicted_gain`` of the genome's scheme (same sum, without building a Scheme)."""
        return bias_gain(self.contrib, g.bias_k) + sum(self.contrib.weight[i][r] for i, r in g.weights)

    def repair(self, k: int, weights: dict[int, float]) -> Genome:
        """Raise k so that every weight-updated conv is bias-updated (the scheme rule)."""
        k = max(0, min(self.n, k))
        if weights:
            k = max(k, self.n - min(weights))
        return Genome(k, tuple(sorted(weights.items())))

    def sample(self, rng: random.Random) -> Genome:
        """k uniform in 0..n; each analysed conv within the last k updated with a random probability."""
        k = rng.randint(0, self.n)
        density = rng.random() * 0.5
        weights = {i: rng.choice(self.ratios[i]) for i in self.layers if i >= self.n - k and rng.random() < density}
        return self.repair(k, weights)

    def mutate(self, g: Genome, rng: random.Random, rate: float) -> Genome:
        k = g.bias_k
        if rng.random() < 0.5:
            k = rng.randint(0, self.n) if rng.random() < 0.3 else k + rng.choice((-3, -2, -1, 1, 2, 3))
        weights = dict(g.weights)
        for i in self.layers:
            if rng.random() < rate:
                choice = rng.choice([None] + self.ratios[i])
                if choice is None:
                    weights.pop(i, None)
                else:
                    weights[i] = choice
        if weights and k < self.n - min(weights) and rng.random() < 0.5:
            # k fell below a weight-updated conv: half the time keep k and drop those weights (else
            # ``repair`` raises k), so that the search can also move towards cheaper schemes
            weights = {i: r for i, r in weights.items() if i >= self.n - k}
        return self.repair(k, weights)

    def crossover(self, a: Genome, b: Genome, rng: random.Random) -> Genome:
        wa, wb = dict(a.weights), dict(b.weights)
        weights = {}
        for i in self.layers:
            pick = wa if rng.random() < 0.5 else wb
            if i in pick:
                weights[i] = pick[i]
        return self.repair(rng.choice((a.bias_k, b.bias_k)), weights)


class Evaluator:
    """Scores distinct genomes against the budgets, counting evaluations and the best-so-far curve."""

    def __init__(self, space: Space, cost: SramCost, cfg: SearchConfig, model: str,
                 on_eval: Callable[[], None] | None = None):
        self.space, self.cost, self.cfg, self.model = space, cost, cfg, model
        self.seen: dict[Genome, Evaluated] = {}
        self.history: list[float] = []
        self.best: Evaluated | None = None
        self.on_eval = on_eval

    def __call__(self, g: Genome) -> Evaluated:
        if g in self.seen:
            return self.seen[g]
        check = self.cost.check(g.scheme(self.model, self.space.n), self.cfg.sram_budget, self.cfg.flash_budget)
        ev = Evaluated(g, check.fits, self.space.gain(g), check.sram_bytes)
        self.seen[g] = ev
        if ev.feasible and (self.best is None or ev.rank() < self.best.rank()):
            self.best = ev
        self.history.append(self.best.gain if self.best else float("nan"))
        if self.on_eval:
            self.on_eval()
        return ev

    @property
    def count(self) -> int:
        return len(self.seen)

    def fresh(self, make: Callable[[], Genome], rng: random.Random, tries: int = 30) -> Genome | None:
        """A genome not evaluated yet from ``make`` (then from the sampler); None if none is found."""
        for t in range(tries):
            g = make() if t < tries // 2 else self.space.sample(rng)
            if g not in self.seen:
                return g
        return None


def _start(ev: Evaluator) -> None:
    """Both methods start from the classifier-only scheme: the budget's floor, always feasible."""
    ev(Genome(0, ()))


def evolve(space: Space, cost: SramCost, cfg: SearchConfig, model: str, progress: bool = True) -> SearchResult:
    rng = random.Random(cfg.seed)
    with tqdm(total=cfg.evaluations, desc="evolution", unit="cand", disable=not progress, dynamic_ncols=True) as bar:
        ev = Evaluator(space, cost, cfg, model, lambda: bar.update(1))
        _start(ev)
        population = [ev.seen[Genome(0, ())]]
        while len(population) < cfg.population and ev.count < cfg.evaluations:
            g = ev.fresh(lambda: space.sample(rng), rng)
            if g is None:
                break
            population.append(ev(g))
        n_parents = max(2, int(cfg.population * cfg.parent_fraction))
        while ev.count < cfg.evaluations:
            parents = sorted(population, key=Evaluated.rank)[:n_parents]
            children = _children(ev, space, parents, cfg, rng)
            if not children:
                break  # the space is exhausted
            population = sorted(parents + children, key=Evaluated.rank)[:cfg.population]
    return SearchResult("evolution", ev.best, ev.history, ev.count, list(ev.seen.values()))


def _children(ev: Evaluator, space: Space, parents: list[Evaluated], cfg: SearchConfig,
              rng: random.Random) -> list[Evaluated]:
    children = []
    for c in range(cfg.population):
        if ev.count >= cfg.evaluations:
            break
        if c % 2 == 0:
            make = lambda: space.mutate(rng.choice(parents).genome, rng, cfg.mutation_rate)  # noqa: E731
        else:
            make = lambda: space.mutate(space.crossover(rng.choice(parents).genome, rng.choice(parents).genome, rng),
                                        rng, cfg.mutation_rate / 3)  # noqa: E731
        g = ev.fresh(make, rng)
        if g is not None:
            children.append(ev(g))
    return children


def random_search(space: Space, cost: SramCost, cfg: SearchConfig, model: str, progress: bool = True) -> SearchResult:
    rng = random.Random(cfg.seed + 1_000_003)  # its own stream, reproducible from the same seed
    with tqdm(total=cfg.evaluations, desc="random", unit="cand", disable=not progress, dynamic_ncols=True) as bar:
        ev = Evaluator(space, cost, cfg, model, lambda: bar.update(1))
        _start(ev)
        while ev.count < cfg.evaluations:
            g = ev.fresh(lambda: space.sample(rng), rng)
            if g is None:
                break
            ev(g)
    return SearchResult("random", ev.best, ev.history, ev.count, list(ev.seen.values()))


def plot_progress(results: list[SearchResult], path: str, title: str) -> None:
    """Best feasible predicted gain vs distinct evaluations, one line per method (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ax.plot(range(1, len(r.history) + 1), [h * 100 for h in r.history], label=f"{r.method} "
                f"(best {r.best.gain * 100:+.2f})")
    ax.set_xlabel("distinct candidates evaluated (exact compile memory)")
    ax.set_ylabel("best predicted gain under budget (acc. points)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from mcutrain.io.figure import save_figure  # written whole (a killed run leaves no half plot)

    save_figure(fig, path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class SearchOutcome:
    scheme: Scheme
    gain: float
    exact: Cost  # of the chosen scheme: the numbers ``mcutrain compile`` prints
    minimum: Cost  # of the classifier-only scheme
    evolution: SearchResult
    random: SearchResult
    unshrunk_gain: float | None = None  # the plain sum (``predicted_gain``) of the chosen scheme
    noise: str = ""  # which standard errors the objective shrank by (``contrib.noise_source``)


def search(cost: SramCost, contrib: Contrib, cfg: SearchConfig, progress: bool = True,
           name: str = "searched") -> SearchOutcome:
    """Evolution and, as the baseline, random search with as many evaluations; the evolution's best
    (never over budget) is the answer. A budget below the classifier-only scheme is an error. Gains are
    of the noise-shrunk analysis (``cfg.noise_z``); ``unshrunk_gain`` is the chosen scheme's plain sum."""
    model = cost.table.model  # the schemes' "model": a zoo architecture, or "graph"
    if contrib.arch != model:
        raise McutrainError(f"the contribution analysis is for {contrib.arch!r}, the model is {model!r}")
    if contrib.n_convs != len(cost.table.names):
        raise McutrainError(f"the contribution analysis counts {contrib.n_convs} convs, {cost.label} has "
                            f"{len(cost.table.names)}: analyse this model with `mcutrain analyze`")
    space = Space(shrunk(contrib, cfg.noise_z))
    minimum = cost.exact(Genome(0, ()).scheme(model, space.n))
    check_minimum("SRAM budget", cfg.sram_budget, minimum.total_sram_bytes, cost.label)
    if cfg.flash_budget is not None:
        check_minimum("Flash budget", cfg.flash_budget, minimum.flash_bytes, cost.label)
    evo = evolve(space, cost, cfg, model, progress)
    rnd = random_search(space, cost, cfg, model, progress)
    best = evo.best.genome
    scheme = best.scheme(model, space.n, name)
    exact = cost.exact(scheme)
    if exact.total_sram_bytes > cfg.sram_budget:  # cannot happen: ``check`` is exact; a bug if it does
        raise RuntimeError(f"internal error: the searched scheme needs {exact.total_sram_bytes} bytes, over the "
                           f"budget of {cfg.sram_budget}")
    return SearchOutcome(scheme, space.gain(best), exact, minimum, evo, rnd, predicted_gain(contrib, scheme),
                         noise_source(contrib, cfg.noise_z))
