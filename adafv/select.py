"""AdaFV token selection and its baselines: pure functions of score tensors (shapes in, positions out).

Positions are crop-major: position `n*P + p` is patch `p` (raster order) of crop `n`. Every function here is batched,
runs without Python loops over tokens or host syncs, and traces to ONNX with constant-K TopK only (no sort of
data-dependent length, no boolean-mask indexing), so the very same code runs in PyTorch and inside the exported
vision graph. The number of crops N may be symbolic (dynamic) while tracing: everything that depends on N is a
mask, never a shape that TopK has to know. Equal scores (a flat image gives many) are ordered by position, lowest
first, in PyTorch and in the exported graph alike (see `_largest`).

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

_BIG = float(2**23)  # sentinel for float32 keys of positions/indices: exact integers up to 2**24


def _smallest(key: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest entries of the last axis, ascending (a constant-K TopK). Only ever called on distinct keys."""
    return torch.topk(key, k, dim=-1, largest=False, sorted=True)


def _largest(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries of the last axis, descending, **ties broken by index (lowest first)**.

    That is what ONNX's TopK specifies, so the exported graph (traced: one constant-K TopK) and eager PyTorch agree
    even on flat images, where many scores are exactly equal. Eager `torch.topk` leaves the order of ties
    unspecified, so eager code takes a stable descending sort instead: the same rule, the same result.
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return torch.topk(x, k, dim=-1, largest=True, sorted=True)
    values, index = torch.sort(x, dim=-1, descending=True, stable=True)
    return values[..., :k], index[..., :k]


def _compact(valid: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the valid entries of each row, in their order, moved to the front; (B, L) bool -> (B, k) int64."""
    index = torch.arange(valid.shape[-1], device=valid.device, dtype=torch.float32)  # (L,)
    key = index + _BIG * (~valid).float()  # (B, L)
    return _smallest(key, k)[1]  # (B, k)


def _first_argmax(x: torch.Tensor) -> torch.Tensor:
    """Smallest index of the maximum of each row; (B, J) -> (B,). Explicit, so it does not rely on ArgMax ties."""
    j = torch.arange(x.shape[-1], device=x.device)  # (J,)
    best = x.amax(-1, keepdim=True)  # (B, 1)
    return torch.where(x == best, j, x.shape[-1]).amin(-1)  # (B,)


def idiv(a, b):
    """Integer division of non-negative int64 tensors. Traces to one ONNX Div: `//` would add sign fix-ups (Equal on
    bool) that TensorRT rejects."""
    return torch.div(a, b, rounding_mode="trunc")


def imod(a, b):
    """Remainder of non-negative int64 tensors, as Div/Mul/Sub (see idiv)."""
    return a - idiv(a, b) * b


def iclip(x: torch.Tensor, low=None, high=None) -> torch.Tensor:
    """Clamp an int64 tensor with Where (TensorRT's Clip takes floats only)."""
    if low is not None:
        x = torch.where(x < low, low, x)
    if high is not None:
        x = torch.where(x > high, high, x)
    return x


def _quotas(keep: int, crop: torch.Tensor) -> torch.Tensor:
    """Exact-mode saliency quota per crop: floor(keep/N), plus one for the first keep mod N crops; (N,) int64."""
    n_crops = crop.new_full((), crop.shape[0])  # () a tensor, so a symbolic N traces as data, not as a TopK K
    budget = crop.new_full((), keep)
    return idiv(budget, n_crops) + (crop < imod(budget, n_crops)).long()  # (N,)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, -1, index)


def _positions_to_mask(num_positions, *position_lists: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Scatter the chosen entries of several (positions, chosen) pairs into a (B, NP) 0/1 float mask.

    Entries that are not chosen write to a spare column NP, so duplicate indices always write the same value.
    """
    first = position_lists[0][0]
    buf = first.new_zeros((first.shape[0], num_positions + 1), dtype=torch.float32)  # (B, NP+1)
    for pos, chosen in position_lists:
        target = torch.where(chosen, pos, num_positions)  # (B, L)
        buf = buf.scatter(1, target, torch.ones_like(target, dtype=torch.float32))
    return buf[:, :num_positions]  # (B, NP)


def _mask_to_positions(mask: torch.Tensor, k: int) -> torch.Tensor:
    """The k positions of a (B, NP) 0/1 mask that holds exactly k ones, ascending."""
    pos = torch.arange(mask.shape[-1], device=mask.device, dtype=torch.float32)  # (NP,)
    key = torch.where(mask > 0, pos, _BIG + pos)  # (B, NP)
    return _smallest(key, k)[1]  # (B, k) int64


def _saliency_candidates(saliency: torch.Tensor, keep: int, quota: torch.Tensor, legacy_offset: bool):
    """Per-crop top-`quota[n]` saliency, descending inside each crop block, blocks concatenated crop 0 first.

    saliency (B, N, P), quota (N,) int -> values (B, keep), positions (B, keep); entries past sum(quota) are padding.
    """
    B, N, P = saliency.shape
    per_crop = min(keep, P)  # constant K, whatever N is
    values, local = _largest(saliency, per_crop)  # (B, N, per_crop)
    crop = torch.arange(N, device=saliency.device)  # (N,)
    offset = crop if legacy_offset else crop * P  # the released code's defect maps crop n to +n
    positions = local + offset[:, None]  # (B, N, per_crop)
    valid = torch.arange(per_crop, device=saliency.device)[None, :] < quota[:, None]  # (N, per_crop)
    valid = valid[None].expand(B, N, per_crop).reshape(B, N * per_crop)  # (B, N*per_crop)
    order = _compact(valid, keep)  # (B, keep)
    return _take(values.reshape(B, -1), order), _take(positions.reshape(B, -1), order)  # (B, keep) each


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

    a, pos_t = _largest(relevance, keep)  # (B, keep) relevance list; first V used
    c, pos_c = _saliency_candidates(saliency, keep, (2 * k).expand(N), legacy_offset)  # (B, keep); first V used

    # S1(j) = sum of a[B0 : B0+j]
    zero = a.new_zeros((B, 1))
    cum_t = torch.cat([zero, torch.cumsum(torch.where(i < V, a, 0.0), -1)], -1)  # (B, keep+1)
    j = torch.arange(keep + 1, device=dev)  # (keep+1,)
    s1 = _take(cum_t, iclip(B0 + j, high=keep).expand(B, -1)) - _take(cum_t, B0.expand(B, 1))  # (B, keep+1)

    # L2 = c[B0:V] sorted descending, remembering the permutation
    in_l2 = (i >= B0) & (i < V)  # (keep,)
    c2, perm = _largest(torch.where(in_l2, c, -torch.inf), keep)  # (B, keep)
    pos_2 = _take(pos_c, perm)  # (B, keep)
    cum_2 = torch.cat([zero, torch.cumsum(torch.where(i < V - B0, c2, 0.0), -1)], -1)  # (B, keep+1)
    s2 = _take(cum_2, iclip(R - j, low=0).expand(B, -1))  # (B, keep+1) = S2(R - j)

    objective = torch.where(j <= R, s1 * s2, -torch.inf)  # (B, keep+1)
    k1 = _first_argmax(objective)[:, None]  # (B, 1)
    k2 = R - k1  # (B, 1)

    chosen = torch.cat(
        [
            torch.where(i < B0 + k1, pos_t, -1),  # pos_t[:B0+k1]
            torch.where(i < B0, pos_c, -1),  # pos_c[:B0]
            torch.where(i < k2, pos_2, -1),  # pos_c[B0:][perm][:k2]
        ],
        -1,
    ).float()  # (B, 3*keep)
    key = torch.where(chosen >= 0, chosen, _BIG)
    out = _smallest(key, keep)[0]  # (B, keep) ascending, V valid then sentinels
    return torch.where(out >= _BIG, -1, out.long())  # (B, keep)


def _exact(saliency: torch.Tensor, relevance: torch.Tensor, keep: int) -> torch.Tensor:
    """The exact-K, de-duplicated rule of the module docstring; (B, keep) distinct positions, ascending."""
    B, N, P = saliency.shape
    NP = N * P
    dev = saliency.device
    crop = torch.arange(N, device=dev)  # (N,)
    quota = _quotas(keep, crop)  # (N,) sums to keep
    B0 = keep // 4
    L = keep - B0  # length of L1 and L2 before removing G

    a, pos_t = _largest(relevance, keep)  # (B, keep)
    c, pos_c = _saliency_candidates(saliency, keep, quota, legacy_offset=False)  # (B, keep)

    head = torch.ones((B, B0), dtype=torch.bool, device=dev)
    in_g = _positions_to_mask(NP, (pos_t[:, :B0], head), (pos_c[:, :B0], head))  # (B, NP)
    R = keep - in_g.sum(-1).long()  # (B,) remainder after the guaranteed picks
    in_g = torch.cat([in_g, in_g.new_zeros((B, 1))], -1)  # (B, NP+1): spare column for padding entries

    i = torch.arange(L, device=dev)  # (L,)
    # L1: T[B0:] without G, order kept
    v1 = _take(in_g, pos_t[:, B0:]) == 0  # (B, L)
    order1 = _compact(v1, L)
    pos_1, val_1 = _take(pos_t[:, B0:], order1), _take(a[:, B0:], order1)  # (B, L)
    n1 = v1.sum(-1)  # (B,)
    ok1 = i < n1[:, None]  # (B, L)
    s1 = torch.cat([a.new_zeros((B, 1)), torch.cumsum(torch.where(ok1, val_1, 0.0), -1)], -1)  # (B, L+1)

    # L2: C[B0:] by saliency descending, without G, order kept
    c_sorted, perm = _largest(c[:, B0:], L)  # (B, L)
    p_sorted = _take(pos_c[:, B0:], perm)
    v2 = _take(in_g, p_sorted) == 0
    order2 = _compact(v2, L)
    pos_2, val_2 = _take(p_sorted, order2), _take(c_sorted, order2)  # (B, L)
    ok2 = i < v2.sum(-1, keepdim=True)  # (B, L)

    # rank of each L2 position inside L1 (L when absent): scatter into a (B, NP+1) table
    rank_table = torch.full((B, NP + 1), float(L), device=dev)
    rank_table = rank_table.scatter(1, torch.where(ok1, pos_1, NP), torch.where(ok1, i.float(), float(L)))
    rank_2 = _take(rank_table, torch.where(ok2, pos_2, NP))  # (B, L)

    # for every split j: which L2 entries are new (not among the first j of L1), and which R - j of them are taken
    j = torch.arange(L + 1, device=dev)  # (J,) with J = L+1 >= R+1
    new = ok2[:, None, :] & (rank_2[:, None, :] >= j[None, :, None])  # (B, J, L)
    count = torch.cumsum(new.float(), -1)  # (B, J, L)
    need = (R[:, None] - j[None, :]).float()  # (B, J)
    taken = new & (count <= need[..., None])  # (B, J, L)
    s2 = torch.where(taken, val_2[:, None, :], 0.0).sum(-1)  # (B, J)
    feasible = (j[None] <= R[:, None]) & (j[None] <= n1[:, None]) & (count[..., -1] >= need)  # (B, J)
    objective = torch.where(feasible, _take(s1, j.expand(B, -1)) * s2, -torch.inf)  # (B, J)
    k1 = _first_argmax(objective)  # (B,)

    taken_k1 = torch.gather(taken, 1, k1[:, None, None].expand(B, 1, L))[:, 0]  # (B, L)
    mask = _positions_to_mask(
        NP,
        (pos_t[:, :B0], head),
        (pos_c[:, :B0], head),
        (pos_1, ok1 & (i[None] < k1[:, None])),
        (pos_2, taken_k1),
    )  # (B, NP) with exactly keep ones
    return _mask_to_positions(mask, keep)  # (B, keep)


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
        return _all_positions(B, N * P, saliency.device)
    if mode == "paper":
        V = paper_budget(keep, N)
        if V == 0:
            raise ConfigError(f"paper mode needs keep >= 2*N = {2 * N} for N={N} crops, got keep={keep}")
        return adafv_positions(saliency, relevance, keep, mode="paper", legacy_offset=legacy_offset)[:, :V]
    return adafv_positions(saliency, relevance, keep, mode="exact")


def _all_positions(batch: int, num_positions: int, device) -> torch.Tensor:
    return torch.arange(num_positions, device=device).expand(batch, -1).clone()  # (B, NP)


# --- baselines: same contract, (B, N, P), (B, N*P), keep -> (B, K) ascending ---------------------------------------


def fastervlm_positions(saliency: torch.Tensor, relevance: torch.Tensor | None, keep: int) -> torch.Tensor:
    """Saliency only (FasterVLM): each crop keeps its most salient patches, `floor(keep/N)` each, the first
    `keep mod N` crops (base view first) one more. Traceable; requires keep < N*P."""
    saliency = saliency.float()
    B, N, P = saliency.shape
    quota = _quotas(keep, torch.arange(N, device=saliency.device))  # (N,)
    _, pos = _saliency_candidates(saliency, keep, quota, legacy_offset=False)  # (B, keep) distinct
    return _smallest(pos.float(), keep)[0].long()  # (B, keep) ascending


def text_positions(saliency: torch.Tensor, relevance: torch.Tensor, keep: int) -> torch.Tensor:
    """Relevance only: the keep positions with the highest text-to-image relevance, ascending. Traceable."""
    _, pos = _largest(relevance.float(), keep)  # (B, keep)
    return _smallest(pos.float(), keep)[0].long()


def random_positions(saliency: torch.Tensor, relevance: torch.Tensor | None, keep: int, seed: int = 0) -> torch.Tensor:
    """`keep` positions drawn uniformly without replacement from a generator seeded with `seed`, ascending."""
    B, N, P = saliency.shape
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.rand((B, N * P), generator=generator).to(saliency.device)  # (B, NP)
    _, pos = _largest(noise, keep)
    return _smallest(pos.float(), keep)[0].long()


def full_positions(saliency: torch.Tensor, relevance: torch.Tensor | None, keep: int) -> torch.Tensor:
    """No reduction: every position."""
    B, N, P = saliency.shape
    return _all_positions(B, N * P, saliency.device)


def select(
    method: str,
    saliency: torch.Tensor,
    relevance: torch.Tensor | None,
    keep: int,
    *,
    mode: str = "exact",
    legacy_offset: bool = False,
    seed: int = 0,
    check: bool = True,
    tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dispatch by method name (`adafv`, `fastervlm`, `text`, `dart`, `divprune`, `random`, `full`); same contract
    as select_tokens. `tokens` (B, N*P, D), the projected visual tokens: needed by `dart` and `divprune`."""
    from .baselines import TOKEN_METHODS

    if method == "adafv":
        return select_tokens(saliency, relevance, keep, mode=mode, legacy_offset=legacy_offset, check=check)
    if method == "visionzip":
        raise ConfigError("visionzip merges tokens rather than choosing them: call adafv.baselines.visionzip with the "
                          "tower's features and keys (adafv.vision.VisualTokens.hidden)")  # fmt: skip
    if method not in BASELINES and method not in TOKEN_METHODS:
        names = ", ".join(["adafv", *BASELINES, *TOKEN_METHODS])
        raise ConfigError(f"unknown method {method!r}; choose one of {names}")
    needs_relevance = method == "text"
    if check:
        B, N, P = check_scores(saliency, relevance if needs_relevance else None, keep)
    else:
        B, N, P = saliency.shape
    if keep >= N * P or method == "full":
        return _all_positions(B, N * P, saliency.device)
    if method in TOKEN_METHODS:
        if tokens is None or tuple(tokens.shape[:2]) != (B, N * P):
            raise ScoreError(f"{method} selects from the visual tokens themselves: pass tokens of shape (B, N*P, D)")
        return TOKEN_METHODS[method](tokens, keep)
    if method == "random":
        return random_positions(saliency, relevance, keep, seed=seed)
    return BASELINES[method](saliency, relevance, keep)


BASELINES = {
    "fastervlm": fastervlm_positions,
    "text": text_positions,
    "random": random_positions,
    "full": full_positions,
}
