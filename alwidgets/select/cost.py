"""Cost-aware selection: the most utility per unit of labelling cost, within a budget.

Items rarely cost the same to label (a crowded street scene versus an empty
road; a 3-minute clip versus a 5-second one). This wrapper takes any selector,
asks it for scored candidates, and keeps the items with the best
``score / cost`` ratio until the budget, in cost units, is spent.
"""
from __future__ import annotations

import numpy as np

from .._validation import UNLABELED, check_labels, check_positive_int
from .base import Selection, Selector, top_k, unlabeled_indices
from .registry import make_selector, register


@register("cost_aware")
class CostAware(Selector):
    """Wrap a selector: maximise its score per cost under a budget in cost units.

    Parameters
    ----------
    selector : str or Selector
        The inner strategy whose scores measure utility (default ``"margin"``).
        Its scores must be non-negative and comparable across items.
    costs : array (n_items,), optional
        Positive labelling cost of every pool item (seconds, money, clicks).
        Default: 1 for every item, i.e. the inner selector's ranking.
    budget : float, optional
        Cost units to spend on this batch. ``select(n, ...)`` then returns at
        most ``n`` items whose total cost is at most ``budget`` (possibly
        fewer than ``n``). Default: no cost cap, ``n`` items by best ratio.
    n_candidates : int, optional
        How many top items to ask the inner selector for before re-ranking
        by cost; default all unlabelled items (exact for score-based
        selectors). Set it (e.g. ``10 * n``) for expensive batch selectors.

    Notes
    -----
    Items are taken greedily by ``score / cost`` (ties at random); an item
    that no longer fits the remaining budget is skipped and cheaper ones are
    tried (greedy knapsack). ``Selection.scores`` are the ratios; ``info``
    has the spend.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import CostAware
    >>> probs = np.array([[0.5, 0.5], [0.55, 0.45], [0.9, 0.1]])
    >>> costs = np.array([10.0, 1.0, 1.0])
    >>> sel = CostAware("margin", costs=costs, budget=2.0).select(3, labels=[-1, -1, -1], probs=probs)
    >>> sel.indices.tolist(), sel.info["spent"]     # item 0 is nearly as unsure but 10x dearer
    ([1, 2], 2.0)
    """

    def __init__(self, selector="margin", costs=None, budget: float | None = None, n_candidates: int | None = None):
        self.selector = selector
        self.costs = costs
        self.budget = budget
        self.n_candidates = n_candidates

    @property
    def requires(self) -> tuple[str, ...]:
        return tuple(make_selector(self.selector).requires)

    def select(self, n, *, labels, embeddings=None, probs=None, random_state=None) -> Selection:
        """Pick up to ``n`` unlabelled items whose total cost fits ``budget``.

        Unlike other selectors the result may hold fewer than ``n`` items: the
        budget, not the count, is the binding limit.
        """
        n = check_positive_int(n)
        labels = check_labels(labels)
        costs = self._costs(len(labels))
        rng = np.random.default_rng(random_state)
        n_unlabeled = int(np.count_nonzero(labels == UNLABELED))
        if n_unlabeled == 0:
            return Selection(np.empty(0, np.int64), np.empty(0), {"strategy": self.name})
        inner = make_selector(self.selector)
        if isinstance(inner, CostAware):
            raise ValueError("CostAware cannot wrap another CostAware")
        m = n_unlabeled if self.n_candidates is None else min(check_positive_int(self.n_candidates, "n_candidates"),
                                                              n_unlabeled)
        cand = inner.select(max(m, min(n, n_unlabeled)), labels=labels, embeddings=embeddings, probs=probs,
                            random_state=rng)
        return self._pick(n, cand, costs, labels, rng, inner)

    def _select(self, n, *, labels, embeddings, probs, rng):  # pragma: no cover - select() is overridden
        return self.select(n, labels=labels, embeddings=embeddings, probs=probs, random_state=rng)

    def _costs(self, n_items: int) -> np.ndarray:
        if self.costs is None:
            return np.ones(n_items)
        costs = np.asarray(self.costs, dtype=np.float64)
        if costs.shape != (n_items,):
            raise ValueError(f"costs must have one value per pool item ({n_items}), got shape {costs.shape}")
        bad = ~np.isfinite(costs) | (costs <= 0)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ValueError(f"costs must be finite and > 0; rows {rows[:10].tolist()}"
                             + (f" and {len(rows) - 10} more" if len(rows) > 10 else "") + " are not")
        return costs

    def _pick(self, n, cand: Selection, costs, labels, rng, inner) -> Selection:
        idx, scores = cand.indices, cand.scores
        info = {"strategy": self.name, "inner": inner.name, "inner_info": cand.info}
        if np.any(scores < 0):
            raise ValueError(f"{type(inner).__name__} gave negative scores; CostAware needs utilities >= 0")
        c = costs[idx]
        ratio = scores / c
        budget = np.inf if self.budget is None else float(self.budget)
        if not budget > 0:
            raise ValueError(f"budget must be > 0 cost units, got {self.budget}")
        cheapest = costs[unlabeled_indices(labels)].min()
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
