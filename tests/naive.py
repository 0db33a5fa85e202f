"""Plain-Python transcriptions of the selection rules, loop by loop, for testing the tensor code against.

Written from docs/method.md (paper mode) and the exact-mode rule in adafv/select.py's docstring, with no tensors: lists,
sorted(), sums. Feed them exactly representable scores (small integers) so float32 and Python agree bit for bit.
"""

from __future__ import annotations


def _desc(values, positions):
    """Sort (value, position) pairs by value descending; ties keep their order (Python's sort is stable): the lowest
    position first."""
    return sorted(zip(values, positions), key=lambda vp: -vp[0])


def paper(saliency: list[list[float]], relevance: list[float], keep: int, legacy_offset: bool = False) -> list[int]:
    N, P = len(saliency), len(saliency[0])
    k = (keep // 2) // N
    V = 2 * k * N
    B0 = V // 4
    R = V - 2 * B0
    t = _desc(relevance, range(N * P))[:V]
    a = [v for v, _ in t]
    pos_t = [p for _, p in t]
    c, pos_c = [], []
    for n in range(N):
        block = _desc(saliency[n], range(P))[: 2 * k]
        c += [v for v, _ in block]
        pos_c += [(p + n) if legacy_offset else (n * P + p) for _, p in block]
    L1 = a[B0:]
    L2 = _desc(c[B0:], pos_c[B0:])
    best, k1 = None, 0
    for j in range(R + 1):
        value = sum(L1[:j]) * sum(v for v, _ in L2[: R - j])
        if best is None or value > best:
            best, k1 = value, j
    k2 = R - k1
    return sorted(pos_t[: B0 + k1] + pos_c[:B0] + [p for _, p in L2[:k2]])


def exact(saliency: list[list[float]], relevance: list[float], keep: int) -> list[int]:
    N, P = len(saliency), len(saliency[0])
    K = keep
    B0 = K // 4
    t = _desc(relevance, range(N * P))[:K]
    quota = [K // N + (1 if n < K % N else 0) for n in range(N)]
    C = []
    for n in range(N):
        C += [(v, n * P + p) for v, p in _desc(saliency[n], range(P))[: quota[n]]]
    G = {p for _, p in t[:B0]} | {p for _, p in C[:B0]}
    R = K - len(G)
    L1 = [(v, p) for v, p in t[B0:] if p not in G]
    L2 = [(v, p) for v, p in _desc([v for v, _ in C[B0:]], [p for _, p in C[B0:]]) if p not in G]
    best, choice = None, None
    for j in range(R + 1):
        if j > len(L1):
            break
        first = L1[:j]
        taken = {p for _, p in first}
        picks = []
        for v, p in L2:
            if len(picks) == R - j:
                break
            if p not in taken:
                picks.append((v, p))
        if len(picks) < R - j:
            continue
        value = sum(v for v, _ in first) * sum(v for v, _ in picks)
        if best is None or value > best:
            best, choice = value, (first, picks)
    first, picks = choice
    return sorted(G | {p for _, p in first} | {p for _, p in picks})


def baseline(method: str, saliency: list[list[float]], relevance: list[float], keep: int) -> list[int]:
    """fastervlm: each crop's most salient patches, floor(keep/N) each, one more for the first keep mod N crops;
    text: the keep most relevant positions. Ties by position, lowest first."""
    N, P = len(saliency), len(saliency[0])
    if method == "text":
        return sorted(p for _, p in _desc(relevance, range(N * P))[:keep])
    quota = [keep // N + (1 if n < keep % N else 0) for n in range(N)]
    return sorted(n * P + p for n in range(N) for _, p in _desc(saliency[n], range(P))[: quota[n]])
