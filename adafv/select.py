"""AdaFV token selection: pure functions of score tensors (shapes in, positions out). The baselines are in
baselines.py, the primitives both are built from in ops.py, and the one dispatcher by name in methods.py.

Positions are crop-major: position `n*P + p` is patch `p` (raster order) of crop `n`. Every function here is batched,
runs without Python loops over tokens or host syncs, and traces to ONNX with constant-K TopK only (no sort of
data-dependent length, no boolean-mask indexing), so the very same code runs in PyTorch and inside the exported
vision graph. The number of crops N may be symbolic (dynamic) while tracing: everything that depends on N is a
mask, never a shape that TopK has to know. Equal scores (a flat image gives many) are ordered by position, lowest
first, in PyTorch and in the exported graph alike (see `ops.largest`).

Two modes of the AdaFV rule (docs/method.md):

* ``paper`` follows docs/method.md §3-7 to the letter: `V = 2*floor(floor(keep/2)/N)*N` positions, a position
  chosen by both cues appears twice.
* ``exact`` (the default) emits exactly `keep` distinct positions with the same two cues, the same guaranteed
  quarter per cue and the same self-adaptive split. Precisely, with `K = keep`:

  1. Candidates. Relevance list `T`: the K largest relevance scores, descending. Saliency list `C`: crop n
     contributes its `q_n` most salient patches, descending, where `q_n = floor(K/N) + (1 if n < K mod N)` (the
     base view first, so the quotas sum to K); the crop blocks are concatenated, crop 0 first.
  2. Guaranteed picks `G = T[:B0] | C[:B0]` with `B0 = floor(K/4)`. A position in both is taken once, so the
     remainder is `R = K - |G|` (one more slot for each shared position).
  3. Remaining candidates: `L1` = `T[B0:]` without the positions of G (order kept); `L2` = `C[B0:]` sorted by
     saliency descending, without the positions of G.
  4. Split. For j = 0..R: take the first j of L1, then walk L2 in order, skipping positions already taken, until
     R - j more positions are taken. `S1(j)` is the relevance sum of the j picks from L1, `S2(j)` the saliency sum
     of the R - j picks from L2. `k1` is the smallest j that maximises `S1(j) * S2(j)` (over the j for which L1 has
     j positions left). A position claimed by both cues is thus taken once and the freed slot goes to the
     next-best saliency candidate.
  5. Output: G, the first k1 of L1 and the picks from L2 for j = k1, ascending. Exactly K distinct positions.

  With N = 1, an even keep and no position in both lists, every step coincides with paper mode.
"""

from __future__ import annotations

import torch

from .errors import ConfigError, ScoreError
from .ops import (
    BIG,
    all_positions,
    compact,
    first_argmax,
    iclip,
    idiv,
    largest,
    mask_to_positions,
    per_crop_top,
    positions_to_mask,
    quotas,
    smallest,
    take,
)


def _paper(saliency: torch.Tensor, relevance: torch.Tensor, keep: int, legacy_offset: bool) -> torch.Tensor:
    """docs/method.md §3-7; (B, keep) positions, the first V ascending, then -1 padding."""
    B, N, P = saliency.shape
    dev = saliency.device
    crop = torch.arange(N, device=dev)  # (N,)
    k = idiv(crop.new_full((), keep // 2), crop.new_full((), N))  # () a tensor: a symbolic N stays out of TopK's K
    V = 2 * k * N  # () tokens emitted
    B0 = idiv(V, 4)  # () guaranteed picks per cue
    R = V - 2 * B0  # () remainder to split
    i = torch.arange(keep, device=dev)  # (keep,)

    a, pos_t = largest(relevance, keep)  # (B, keep) relevance list; first V used
    c, pos_c = per_crop_top(saliency, keep, (2 * k).expand(N), legacy_offset)  # (B, keep); first V used

    # S1(j) = sum of a[B0 : B0+j]
    zero = a.new_zeros((B, 1))
    cum_t = torch.cat([zero, torch.cumsum(torch.where(i < V, a, 0.0), -1)], -1)  # (B, keep+1)
    j = torch.arange(keep + 1, device=dev)  # (keep+1,)
    s1 = take(cum_t, iclip(B0 + j, high=keep).expand(B, -1)) - take(cum_t, B0.expand(B, 1))  # (B, keep+1)

    # L2 = c[B0:V] sorted descending, remembering the permutation
    in_l2 = (i >= B0) & (i < V)  # (keep,)
    c2, perm = largest(torch.where(in_l2, c, -torch.inf), keep)  # (B, keep)
    pos_2 = take(pos_c, perm)  # (B, keep)
    cum_2 = torch.cat([zero, torch.cumsum(torch.where(i < V - B0, c2, 0.0), -1)], -1)  # (B, keep+1)
    s2 = take(cum_2, iclip(R - j, low=0).expand(B, -1))  # (B, keep+1) = S2(R - j)

    objective = torch.where(j <= R, s1 * s2, -torch.inf)  # (B, keep+1)
    k1 = first_argmax(objective)[:, None]  # (B, 1)
    k2 = R - k1  # (B, 1)

    chosen = torch.cat(
        [
            torch.where(i < B0 + k1, pos_t, -1),  # pos_t[:B0+k1]
            torch.where(i < B0, pos_c, -1),  # pos_c[:B0]
            torch.where(i < k2, pos_2, -1),  # pos_c[B0:][perm][:k2]
        ],
        -1,
    ).float()  # (B, 3*keep)
    key = torch.where(chosen >= 0, chosen, BIG)
    out = smallest(key, keep)[0]  # (B, keep) ascending, V valid then sentinels
    return torch.where(out >= BIG, -1, out.long())  # (B, keep)


def _exact(saliency: torch.Tensor, relevance: torch.Tensor, keep: int) -> torch.Tensor:
    """The exact-K, de-duplicated rule of the module docstring; (B, keep) distinct positions, ascending."""
    B, N, P = saliency.shape
    NP = N * P
    dev = saliency.device
    crop = torch.arange(N, device=dev)  # (N,)
    quota = quotas(keep, crop)  # (N,) sums to keep
    B0 = keep // 4
    L = keep - B0  # length of L1 and L2 before removing G

    a, pos_t = largest(relevance, keep)  # (B, keep)
    c, pos_c = per_crop_top(saliency, keep, quota, legacy_offset=False)  # (B, keep)

    head = torch.ones((B, B0), dtype=torch.bool, device=dev)
    in_g = positions_to_mask(NP, (pos_t[:, :B0], head), (pos_c[:, :B0], head))  # (B, NP)
    R = keep - in_g.sum(-1).long()  # (B,) remainder after the guaranteed picks
    in_g = torch.cat([in_g, in_g.new_zeros((B, 1))], -1)  # (B, NP+1): spare column for padding entries

    i = torch.arange(L, device=dev)  # (L,)
    # L1: T[B0:] without G, order kept
    v1 = take(in_g, pos_t[:, B0:]) == 0  # (B, L)
    order1 = compact(v1, L)
    pos_1, val_1 = take(pos_t[:, B0:], order1), take(a[:, B0:], order1)  # (B, L)
    n1 = v1.sum(-1)  # (B,)
    ok1 = i < n1[:, None]  # (B, L)
    s1 = torch.cat([a.new_zeros((B, 1)), torch.cumsum(torch.where(ok1, val_1, 0.0), -1)], -1)  # (B, L+1)

    # L2: C[B0:] by saliency descending, without G, order kept
    c_sorted, perm = largest(c[:, B0:], L)  # (B, L)
    p_sorted = take(pos_c[:, B0:], perm)
    v2 = take(in_g, p_sorted) == 0
    order2 = compact(v2, L)
    pos_2, val_2 = take(p_sorted, order2), take(c_sorted, order2)  # (B, L)
    ok2 = i < v2.sum(-1, keepdim=True)  # (B, L)

    # rank of each L2 position inside L1 (L when absent): scatter into a (B, NP+1) table
    rank_table = torch.full((B, NP + 1), float(L), device=dev)
    rank_table = rank_table.scatter(1, torch.where(ok1, pos_1, NP), torch.where(ok1, i.float(), float(L)))
    rank_2 = take(rank_table, torch.where(ok2, pos_2, NP))  # (B, L)

    # for every split j: which L2 entries are new (not among the first j of L1), and which R - j of them are taken
    j = torch.arange(L + 1, device=dev)  # (J,) with J = L+1 >= R+1
    new = ok2[:, None, :] & (rank_2[:, None, :] >= j[None, :, None])  # (B, J, L)
    count = torch.cumsum(new.float(), -1)  # (B, J, L)
    need = (R[:, None] - j[None, :]).float()  # (B, J)
    taken = new & (count <= need[..., None])  # (B, J, L)
    s2 = torch.where(taken, val_2[:, None, :], 0.0).sum(-1)  # (B, J)
    feasible = (j[None] <= R[:, None]) & (j[None] <= n1[:, None]) & (count[..., -1] >= need)  # (B, J)
    objective = torch.where(feasible, take(s1, j.expand(B, -1)) * s2, -torch.inf)  # (B, J)
    k1 = first_argmax(objective)  # (B,)

    taken_k1 = torch.gather(taken, 1, k1[:, None, None].expand(B, 1, L))[:, 0]  # (B, L)
    mask = positions_to_mask(
        NP,
        (pos_t[:, :B0], head),
        (pos_c[:, :B0], head),
        (pos_1, ok1 & (i[None] < k1[:, None])),
        (pos_2, taken_k1),
    )  # (B, NP) with exactly keep ones
    return mask_to_positions(mask, keep)  # (B, keep)


def adafv_positions(
    saliency: torch.Tensor, relevance: torch.Tensor, keep: int, *, mode: str = "exact", legacy_offset: bool = False
) -> torch.Tensor:
    """The traceable core of :func:`select_tokens`: (B, N, P), (B, N*P) -> (B, keep) int64.

    No validation and no Python branch on N, so it exports with a dynamic crop axis. Requires keep < N*P. Exact mode
    fills every row; paper mode fills the first V entries (ascending) and pads with -1.
    """
    saliency, relevance = saliency.float(), relevance.float()  # the selection math stays float32
    if mode == "exact":
        return _exact(saliency, relevance, keep)
    return _paper(saliency, relevance, keep, legacy_offset)


def paper_budget(keep: int, num_crops: int) -> int:
    """V, the number of positions paper mode emits for `keep` and N crops (docs/method.md §3)."""
    return 2 * ((keep // 2) // num_crops) * num_crops


def check_scores(saliency: torch.Tensor, relevance: torch.Tensor | None, keep: int) -> tuple[int, int, int]:
    """Validate shapes, dtypes and values of the two cues and the budget; returns (B, N, P). Syncs with the host."""
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise ConfigError(f"keep must be an integer, got {keep!r}")
    if keep <= 0:
        raise ConfigError(f"keep must be positive, got {keep}")
    if not isinstance(saliency, torch.Tensor) or saliency.dim() != 3:
        shape = tuple(saliency.shape) if isinstance(saliency, torch.Tensor) else type(saliency).__name__
        raise ScoreError(f"saliency must be a (B, N, P) tensor, got {shape}")
    B, N, P = saliency.shape
    if min(B, N, P) == 0:
        raise ScoreError(f"saliency has an empty axis: shape {tuple(saliency.shape)}")
    tensors = {"saliency": saliency}
    if relevance is not None:
        if not isinstance(relevance, torch.Tensor) or tuple(relevance.shape) != (B, N * P):
            shape = tuple(relevance.shape) if isinstance(relevance, torch.Tensor) else type(relevance).__name__
            raise ScoreError(f"relevance must have shape (B, N*P) = ({B}, {N * P}) to match saliency, got {shape}")
        tensors["relevance"] = relevance
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise ScoreError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if not bool(torch.isfinite(t).all()):
            raise ScoreError(f"{name} contains NaN or infinite values")
        if bool((t < 0).any()):
            raise ScoreError(f"{name} has negative values; AdaFV's cues are probabilities (>= 0)")
    return B, N, P


def select_tokens(
    saliency: torch.Tensor,
    relevance: torch.Tensor,
    keep: int,
    *,
    mode: str = "exact",
    legacy_offset: bool = False,
    check: bool = True,
) -> torch.Tensor:
    """AdaFV selection. saliency (B, N, P) float, relevance (B, N*P) float -> (B, K) int64 positions, ascending.

    K = keep in exact mode (distinct positions) and K = 2*floor(floor(keep/2)/N)*N in paper mode (a position chosen
    by both cues appears twice). With keep >= N*P nothing is dropped: every position is returned once, in both modes.
    `check=False` skips the validation (which synchronises with the host to look at the values).
    """
    if mode not in ("exact", "paper"):
        raise ConfigError(f"unknown mode {mode!r}; choose 'exact' or 'paper'")
    if legacy_offset and mode != "paper":
        raise ConfigError("legacy_offset reproduces the released code's defect and needs mode='paper'")
    if check:
        B, N, P = check_scores(saliency, relevance, keep)
    else:
        B, N, P = saliency.shape
    if keep >= N * P:
        return all_positions(B, N * P, saliency.device)
    if mode == "paper":
        V = paper_budget(keep, N)
        if V == 0:
            raise ConfigError(f"paper mode needs keep >= 2*N = {2 * N} for N={N} crops, got keep={keep}")
        return adafv_positions(saliency, relevance, keep, mode="paper", legacy_offset=legacy_offset)[:, :V]
    return adafv_positions(saliency, relevance, keep, mode="exact")
