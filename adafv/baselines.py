"""Baselines that look at the visual tokens themselves (not at the two cues): the peers a user compares AdaFV with.
Pure functions with the selection contract, fixed K, traceable to ONNX (constant-K TopK, no data-dependent shapes):

    tokens (B, L, D) projected visual tokens, keep -> positions (B, keep) int64, ascending, distinct

Both are re-implemented from their papers' descriptions (DivPrune's code is under a non-commercial licence; nothing
of it was read or copied). Ties are broken by position, lowest first, as everywhere in adafv.

* `dart` (Wen et al., 2025, "Stop looking for important tokens in multimodal language models: duplication matters
  more"): a few pivot tokens, the largest by L1 norm; then the tokens least similar (cosine) to every pivot, i.e.
  the ones that duplicate no pivot. Pivots: `min(8, keep)` (the paper's default count for LLaVA).
* `divprune` (Alvar et al., CVPR 2025): the Max-Min Diversity Problem on cosine distance, solved greedily: start
  with the token farthest from its nearest neighbour, then repeatedly add the token whose distance to the nearest
  kept one is largest.
"""

from __future__ import annotations

import torch

from .select import _BIG, _first_argmax, _largest, _mask_to_positions

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
    _, pivot = _largest(tokens.float().abs().sum(-1), n)  # (B, n) the largest L1 norms
    sim = torch.gather(_cosine(tokens), 1, pivot[:, :, None].expand(B, n, L))  # (B, n, L) pivot rows
    duplication = sim.amax(1)  # (B, L) how much each token repeats its closest pivot
    is_pivot = torch.zeros((B, L + 1), device=tokens.device).scatter(1, pivot, 1.0)[:, :L] > 0  # (B, L)
    _, rest = _largest(torch.where(is_pivot, -_BIG, -duplication), keep - n)  # (B, keep - n) least duplicated
    mask = torch.zeros((B, L + 1), device=tokens.device).scatter(1, pivot, 1.0).scatter(1, rest, 1.0)[:, :L]
    return _mask_to_positions(mask, keep)  # (B, keep)


def divprune_positions(tokens: torch.Tensor, keep: int) -> torch.Tensor:
    """Greedy max-min diversity on cosine distance (1 - cos)."""
    B, L, _ = tokens.shape
    distance = 1.0 - _cosine(tokens)  # (B, L, L)
    eye = torch.eye(L, device=tokens.device, dtype=torch.bool)
    nearest = torch.where(eye, float("inf"), distance).amin(-1)  # (B, L) distance to the nearest other token
    first = _first_argmax(nearest)  # (B,)
    chosen = torch.zeros((B, L), device=tokens.device)
    chosen = chosen.scatter(1, first[:, None], 1.0)  # (B, L)
    to_kept = torch.gather(distance, 1, first[:, None, None].expand(B, 1, L))[:, 0]  # (B, L) distance to the set
    for _ in range(keep - 1):  # unrolled when traced: keep is fixed
        pick = _first_argmax(torch.where(chosen > 0, -float("inf"), to_kept))  # (B,)
        chosen = chosen.scatter(1, pick[:, None], 1.0)
        row = torch.gather(distance, 1, pick[:, None, None].expand(B, 1, L))[:, 0]  # (B, L)
        to_kept = torch.minimum(to_kept, row)
    return _mask_to_positions(chosen, keep)  # (B, keep)


TOKEN_METHODS = {"dart": dart_positions, "divprune": divprune_positions}
