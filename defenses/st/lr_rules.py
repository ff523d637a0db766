"""Per-layer learning-rate multipliers of Progressive Staged Training (ST, Dang et al. 2023, Eq. 5).

A rule maps the count c of ACM threshold crossings so far, the hyperparameter β and the
number of layers L to multipliers λ_1..λ_L, shallow to deep. Every rule gives all ones at
c = 0 (plain training) and lowers the shallow layers first and most as c grows, which is all
the paper's text preserves of Eq. 5. Its exact form was lost, so each rule here is a
**reconstruction**:

- ``linear`` (default; ``docs/algorithms/staged.md``): λ_l = clip(1 − β·c·(L − l + 1)/L, 0, 1). The
  shallowest layer stops after ⌈1/β⌉ crossings, the deepest after ⌈L/β⌉.
- ``geometric``: λ_l = (1 − β)^(c·(L − l + 1)/L): decays towards zero without reaching it.
"""
from __future__ import annotations

from collections.abc import Callable


def linear(count: int, beta: float, n_layers: int) -> list[float]:
    return [min(1.0, max(0.0, 1.0 - beta * count * (n_layers - i) / n_layers)) for i in range(n_layers)]


def geometric(count: int, beta: float, n_layers: int) -> list[float]:
    return [(1.0 - min(beta, 1.0)) ** (count * (n_layers - i) / n_layers) for i in range(n_layers)]


RULES: dict[str, Callable[[int, float, int], list[float]]] = {"linear": linear, "geometric": geometric}
