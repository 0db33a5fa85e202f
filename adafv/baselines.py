"""Every baseline a user compares AdaFV with, as pure functions with the selection contract, fixed K, traceable to
ONNX (constant-K TopK, no data-dependent shapes); `adafv.methods` is the one place that dispatches to them by name.

By one cue (the same inputs as AdaFV): `fastervlm_positions` (saliency only, per-crop quotas), `text_positions`
(relevance only), and the references `random_positions` (seeded) and `full_positions` (every position).

By the visual tokens themselves:

    tokens (B, L, D) projected visual tokens, keep -> positions (B, keep) int64, ascending, distinct

Both are re-implemented from their papers' descriptions (DivPrune's code is under a non-commercial licence; nothing
of it was read or copied). Ties are broken by position, lowest first, as everywhere in adafv.

* `dart` (Wen et al., 2025, "Stop looking for important tokens in multimodal language models: duplication matters
  more"): a few pivot tokens, the largest by L1 norm; then the tokens least similar (cosine) to every pivot, i.e.
  the ones that duplicate no pivot. Pivots: `min(8, keep)` (the paper's default count for LLaVA).
* `divprune` (Alvar et al., CVPR 2025): the Max-Min Diversity Problem on cosine distance, solved greedily: start
  with the token farthest from its nearest neighbour, then repeatedly add the token whose distance to the nearest
  kept one is largest.

One baseline merges instead of choosing, so it has a wider contract (see `visionzip`):

* `visionzip` (Yang et al., CVPR 2025, "VisionZip: Longer is better but not necessary in vision language models"):
  per crop, dominant tokens by [CLS] attention, and a few contextual tokens that each merge a group of the rest,
  grouped by key similarity, in the vision tower's feature space (before the projector).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .ops import (
    BIG,
    all_positions,
    first_argmax,
    idiv,
    imod,
    largest,
    mask_to_positions,
    per_crop_top,
    quotas,
    smallest,
)

DART_PIVOTS = 8


def _cosine(tokens: torch.Tensor) -> torch.Tensor:
    """(B, L, D) -> (B, L, L) cosine similarities, in float32."""
    x = tokens.float()
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x @ x.transpose(-1, -2)


def dart_positions(tokens: torch.Tensor, keep: int, pivots: int = DART_PIVOTS) -> torch.Tensor:
    """Pivots by L1 norm, then the keep - pivots tokens whose largest similarity to a pivot is smallest."""
    B, L, _ = tokens.shape
    n = min(pivots, keep)
    _, pivot = largest(tokens.float().abs().sum(-1), n)  # (B, n) the largest L1 norms
    sim = torch.gather(_cosine(tokens), 1, pivot[:, :, None].expand(B, n, L))  # (B, n, L) pivot rows
    duplication = sim.amax(1)  # (B, L) how much each token repeats its closest pivot
    is_pivot = torch.zeros((B, L + 1), device=tokens.device).scatter(1, pivot, 1.0)[:, :L] > 0  # (B, L)
    _, rest = largest(torch.where(is_pivot, -BIG, -duplication), keep - n)  # (B, keep - n) least duplicated
    mask = torch.zeros((B, L + 1), device=tokens.device).scatter(1, pivot, 1.0).scatter(1, rest, 1.0)[:, :L]
    return mask_to_positions(mask, keep)  # (B, keep)


def divprune_positions(tokens: torch.Tensor, keep: int) -> torch.Tensor:
    """Greedy max-min diversity on cosine distance (1 - cos)."""
    B, L, _ = tokens.shape
    distance = 1.0 - _cosine(tokens)  # (B, L, L)
    eye = torch.eye(L, device=tokens.device, dtype=torch.bool)
    nearest = torch.where(eye, float("inf"), distance).amin(-1)  # (B, L) distance to the nearest other token
    first = first_argmax(nearest)  # (B,)
    chosen = torch.zeros((B, L), device=tokens.device)
    chosen = chosen.scatter(1, first[:, None], 1.0)  # (B, L)
    to_kept = torch.gather(distance, 1, first[:, None, None].expand(B, 1, L))[:, 0]  # (B, L) distance to the set
    for _ in range(keep - 1):  # unrolled when traced: keep is fixed
        pick = first_argmax(torch.where(chosen > 0, -float("inf"), to_kept))  # (B,)
        chosen = chosen.scatter(1, pick[:, None], 1.0)
        row = torch.gather(distance, 1, pick[:, None, None].expand(B, 1, L))[:, 0]  # (B, L)
        to_kept = torch.minimum(to_kept, row)
    return mask_to_positions(chosen, keep)  # (B, keep)


# --- baselines by the cues: the same contract as AdaFV, (B, N, P) and/or (B, N*P), keep -> (B, keep) ascending -----


def fastervlm_positions(saliency: torch.Tensor, relevance: torch.Tensor | None, keep: int) -> torch.Tensor:
    """Saliency only (FasterVLM): each crop keeps its most salient patches, `floor(keep/N)` each, the first
    `keep mod N` crops (base view first) one more. Traceable; requires keep < N*P."""
    saliency = saliency.float()
    B, N, P = saliency.shape
    quota = quotas(keep, torch.arange(N, device=saliency.device))  # (N,)
    _, pos = per_crop_top(saliency, keep, quota, legacy_offset=False)  # (B, keep) distinct
    return smallest(pos.float(), keep)[0].long()  # (B, keep) ascending


def text_positions(saliency: torch.Tensor, relevance: torch.Tensor, keep: int) -> torch.Tensor:
    """Relevance only: the keep positions with the highest text-to-image relevance, ascending. Traceable."""
    _, pos = largest(relevance.float(), keep)  # (B, keep)
    return smallest(pos.float(), keep)[0].long()


def random_positions(saliency: torch.Tensor, relevance: torch.Tensor | None, keep: int, seed: int = 0) -> torch.Tensor:
    """`keep` positions drawn uniformly without replacement from a generator seeded with `seed`, ascending."""
    B, N, P = saliency.shape
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.rand((B, N * P), generator=generator).to(saliency.device)  # (B, NP)
    _, pos = largest(noise, keep)
    return smallest(pos.float(), keep)[0].long()


def full_positions(saliency: torch.Tensor, relevance: torch.Tensor | None, keep: int) -> torch.Tensor:
    """No reduction: every position."""
    B, N, P = saliency.shape
    return all_positions(B, N * P, saliency.device)


# --- VisionZip: selection + merging ---------------------------------------------------------------------------------

VISIONZIP_CONTEXTUAL = (10, 64)  # contextual tokens per kept token: the paper's 54 dominant + 10 contextual of 64


class Zipped(NamedTuple):
    """What `visionzip` keeps: positions (B, keep) ascending, their features (B, keep, C) and which of them are
    contextual tokens (B, keep) bool (the others are dominant)."""

    positions: torch.Tensor
    features: torch.Tensor
    contextual: torch.Tensor


def visionzip_split(quota: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A crop's quota -> (dominant, contextual) counts: contextual = floor(quota * 10 / 64) (54 + 10 at 64, 108 + 20
    at 128, 162 + 30 at 192, as in the paper's settings), the rest dominant. Integer tensors in, out."""
    contextual = idiv(quota * VISIONZIP_CONTEXTUAL[0], VISIONZIP_CONTEXTUAL[1])
    return quota - contextual, contextual


def visionzip(hidden: torch.Tensor, saliency: torch.Tensor, keys: torch.Tensor, keep: int) -> Zipped:
    """VisionZip at a fixed total budget: hidden (B, N, P, C) features of the tower's feature layer (before the
    projector), saliency (B, N, P) its [CLS] attention, keys (B, N, P, E) its attention keys averaged over heads
    -> `Zipped`: keep positions, ascending, with their features (B, keep, C) for the projector.

    Per crop n, with the quota q_n of the other per-crop methods (floor(keep/N), the first keep mod N crops one
    more; LLaVA-NeXT's VisionZip treats every crop as an image of its own) split by `visionzip_split` into d_n
    dominant and c_n contextual:

    1. dominant: the d_n patches with the most [CLS] attention (ties: lowest position);
    2. targets: of the other P - d_n patches, in raster order, every s-th from the first, s = floor((P - d_n)/c_n),
       c_n of them;
    3. every other remaining patch joins the target whose key is most similar (cosine; ties: the first target);
    4. a contextual token = the target's features + the mean of the features that joined it (the released code's
       rule, which its tables measure; a target nobody joined stays as it is). It sits at the target's position.

    Differences from the released code, all from the fixed-keep contract: the [CLS] token itself is not kept (its
    slot goes to one more dominant patch), and the budget is a total over the crops, split as above, not 64/128/192
    per crop. Traceable: a dynamic N, a constant-K TopK of P per crop, the merge as one (P, P) matmul per crop. With
    keep >= N*P (eager) every patch is kept as it is, as every other method does.
    """
    B, N, P, C = hidden.shape
    device = hidden.device
    if not (torch.compiler.is_compiling() or torch.jit.is_tracing()) and keep >= N * P:  # nothing to drop
        every = torch.arange(N * P, device=device).expand(B, -1)  # (B, NP)
        return Zipped(every, hidden.reshape(B, N * P, C), torch.zeros((B, N * P), dtype=torch.bool, device=device))
    dominant, contextual = visionzip_split(quotas(keep, torch.arange(N, device=device)))  # (N,) each
    _, order = largest(saliency.float(), P)  # (B, N, P) patches by attention, descending, ties by position
    patch = torch.arange(P, device=device)  # (P,)
    rank = torch.zeros_like(order).scatter(-1, order, patch.expand_as(order))  # (B, N, P) rank of each patch
    is_dominant = rank < dominant[:, None]  # (B, N, P)
    remaining = ~is_dominant
    ordinal = (torch.cumsum(remaining.float(), -1) - 1).long()  # (B, N, P) among the remaining (float: TensorRT)
    step = idiv(P - dominant, torch.where(contextual > 0, contextual, 1))[:, None]  # (N, 1), >= 1
    is_target = remaining & (imod(ordinal, step) == 0) & (idiv(ordinal, step) < contextual[:, None])  # (B, N, P)

    unit = keys.float() / keys.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)  # (B, N, P, E)
    similarity = unit @ unit.transpose(-1, -2)  # (B, N, P, P) [patch, target]
    similarity = torch.where(is_target[..., None, :], similarity, -BIG)  # only targets can be joined
    joins = first_argmax(similarity)  # (B, N, P) the target each patch is most similar to
    merged = remaining & ~is_target  # (B, N, P) patches that join a target
    member = (joins[..., None] == patch) & merged[..., None]  # (B, N, P, P) [patch, target] one-hot
    member = member.float()
    count = member.sum(-2)  # (B, N, P) patches joining each target
    joined = member.transpose(-1, -2) @ hidden.float()  # (B, N, P, C) sum of the joining features, per target
    contextual_features = hidden.float() + joined / count.clamp_min(1.0)[..., None]  # (B, N, P, C)
    features = torch.where(is_target[..., None], contextual_features, hidden.float())  # (B, N, P, C)

    kept = (is_dominant | is_target).reshape(B, N * P).float()  # (B, NP) exactly keep ones
    positions = mask_to_positions(kept, keep)  # (B, keep)
    features = torch.gather(features.reshape(B, N * P, C), 1, positions[..., None].expand(B, keep, C))
    is_contextual = torch.gather(is_target.reshape(B, N * P), 1, positions)  # (B, keep)
    return Zipped(positions, features.to(hidden.dtype), is_contextual)  # (B, keep), (B, keep, C), (B, keep)
