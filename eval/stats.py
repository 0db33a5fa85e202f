"""Statistics for accuracy tables: a proportion's 95% interval and a paired comparison of two methods on the same
questions. Pure Python (no scipy), exact where it matters.

    wilson(k, n)      Wilson score interval of k right answers out of n (good at small n and near 0 or 1)
    mcnemar(a, b)     exact McNemar test of two methods' per-question right/wrong lists: only the questions where
                      they disagree count; two-sided binomial p-value of the split under "equally good"
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of the proportion k/n, as (low, high) in [0, 1]; (0, 1) when n is 0."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float | int]:
    """Exact McNemar test of method a against method b on the same questions (a[i], b[i]: right or wrong).
    -> {"a_only": questions only a got right, "b_only": only b, "difference": accuracy of a minus b (points),
    "p": two-sided exact p-value}."""
    if len(a) != len(b):
        raise ValueError(f"paired lists differ in length: {len(a)} vs {len(b)}")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    m = a_only + b_only
    tail = sum(math.comb(m, i) for i in range(min(a_only, b_only) + 1)) / 2**m if m else 1.0
    return {"a_only": a_only, "b_only": b_only, "difference": 100 * (a_only - b_only) / max(1, len(a)),
            "p": min(1.0, 2 * tail)}  # fmt: skip
