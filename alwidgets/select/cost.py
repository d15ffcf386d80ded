"""Cost-aware selection: the most utility per unit of labelling cost, within a budget.

Items rarely cost the same to label (a crowded street scene versus an empty
road; a 3-minute clip versus a 5-second one). This wrapper takes any selector,
asks it for scored candidates, and keeps the items with the best
``score / cost`` ratio until the budget, in cost units, is spent.
"""
from __future__ import annotations

import numpy as np

from .._validation import UNLABELED, Interval
from .base import Selection, Selector, top_k
from .registry import make_selector, register


@register("cost_aware")
class CostAware(Selector):
    """Wrap a selector: maximise its score per cost under a budget in cost units.

    Parameters
    ----------
    selector : str or Selector
        The inner strategy whose scores measure utility (default ``"margin"``).
        Its scores must be non-negative and comparable across items.
    budget : float, optional
        Cost units to spend on this batch. ``select(n, ...)`` then returns at
        most ``n`` items whose total cost is at most ``budget`` (possibly
        fewer than ``n``). Default: no cost cap, ``n`` items by best ratio.
    n_candidates : int, optional
        How many top items to ask the inner selector for before re-ranking
        by cost; default all candidate items (exact for score-based
        selectors). Set it (e.g. ``10 * n``) for expensive batch selectors.

    Notes
    -----
    Per-call input of :meth:`select`: ``costs``, an array ``(n_items,)`` of
    the positive labelling cost of every pool item (seconds, money, clicks);
    default 1 for every item, i.e. the inner selector's ranking. Every other
    input (``model``, ``candidates``, the inner selector's extra inputs) is
    passed on to the inner selector.

    Items are taken greedily by ``score / cost`` (ties at random); an item
    that no longer fits the remaining budget is skipped and cheaper ones are
    tried (greedy knapsack). ``Selection.scores`` are the ratios; ``info``
    has the spend. Unlike other selectors the result may hold fewer than
    ``n`` items: the budget, not the count, is the binding limit.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import CostAware
    >>> probs = np.array([[0.5, 0.5], [0.55, 0.45], [0.9, 0.1]])
    >>> costs = np.array([10.0, 1.0, 1.0])
    >>> sel = CostAware("margin", budget=2.0).select(3, labels=[-1, -1, -1], probs=probs, costs=costs)
    >>> sel.indices.tolist(), sel.info["spent"]     # item 0 is nearly as unsure but 10x dearer
    ([1, 2], 2.0)
    """

    _exact_size = False
    _parameter_constraints = {
        "selector": [str, Selector],
        "budget": [None, Interval(float, 0, None, closed="neither")],
        "n_candidates": [None, Interval(int, 1, None)],
    }

    def __init__(self, selector="margin", budget: float | None = None, n_candidates: int | None = None):
        self.selector = selector
        self.budget = budget
        self.n_candidates = n_candidates

    def _inner(self) -> Selector:
        inner = make_selector(self.selector)
        if isinstance(inner, CostAware):
            raise ValueError("CostAware cannot wrap another CostAware")
        return inner

    @property
    def requires(self) -> tuple[str, ...]:
        return tuple(make_selector(self.selector).requires)

    @property
    def accepts(self) -> tuple[str, ...]:
        return ("costs", *make_selector(self.selector).accepts)

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng, costs=None, **extra):
        costs = self._costs(costs, len(labels))
        inner = self._inner()
        m = len(candidates) if self.n_candidates is None else min(self.n_candidates, len(candidates))
        cand = inner.select(max(m, n), labels=labels, embeddings=embeddings, probs=probs, model=model,
                            candidates=None if len(candidates) == np.count_nonzero(labels == UNLABELED)
                            else candidates, random_state=rng, **extra)
        return self._pick(n, cand, costs, candidates, rng, inner)

    @staticmethod
    def _costs(costs, n_items: int) -> np.ndarray:
        if costs is None:
            return np.ones(n_items)
        costs = np.asarray(costs, dtype=np.float64)
        if costs.shape != (n_items,):
            raise ValueError(f"costs must have one value per pool item ({n_items}), got shape {costs.shape}")
        bad = ~np.isfinite(costs) | (costs <= 0)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ValueError(f"costs must be finite and > 0; rows {rows[:10].tolist()}"
                             + (f" and {len(rows) - 10} more" if len(rows) > 10 else "") + " are not")
        return costs

    def _pick(self, n, cand: Selection, costs, candidates, rng, inner) -> Selection:
        idx, scores = cand.indices, cand.scores
        info = {"strategy": self.name, "inner": inner.name, "inner_info": cand.info}
        if np.any(scores < 0):
            raise ValueError(f"{type(inner).__name__} gave negative scores; CostAware needs utilities >= 0")
        c = costs[idx]
        ratio = scores / c
        budget = np.inf if self.budget is None else float(self.budget)
        cheapest = costs[candidates].min()
        if cheapest > budget:
            raise ValueError(f"budget {budget:g} is below the cheapest unlabelled item's cost ({cheapest:g})")
        keep, spent = _greedy(ratio, c, n, budget, rng)
        info.update({"spent": float(spent), "budget": None if self.budget is None else budget})
        return Selection(idx[keep], ratio[keep], info)


def _greedy(ratio: np.ndarray, cost: np.ndarray, n: int, budget: float, rng: np.random.Generator):
    """Positions taken greedily by ``ratio`` (ties at random) while they fit ``budget``; at most ``n``.

    Only a prefix of the ranking is sorted (grown by doubling when the
    budget skips items), so the cost is O(m + k log k), not O(m log m).
    """
    m = len(ratio)
    k = min(m, max(4 * n, 256))
    while True:
        order, _ = top_k(ratio, np.arange(m), k, rng)
        keep, spent = [], 0.0
        for j in order:
            if spent + cost[j] <= budget * (1 + 1e-12):
                keep.append(j)
                spent += cost[j]
                if len(keep) == n:
                    break
        rest_fits = k < m and budget - spent >= cost.min()
        if len(keep) == n or not rest_fits:
            return np.asarray(keep, dtype=np.int64), spent
        k = min(m, 2 * k)
