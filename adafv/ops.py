"""The traceable primitives every selection is built from: constant-K TopK with ties broken by position, integer
arithmetic that TensorRT accepts, quotas per crop, masks <-> positions. Shapes in, tensors out; no validation, no
Python branch on a symbolic crop count, so everything here exports with a dynamic N.
"""

from __future__ import annotations

import torch

BIG = float(2**23)  # sentinel for float32 keys of positions/indices: exact integers up to 2**24


def smallest(key: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest entries of the last axis, ascending (a constant-K TopK). Only ever called on distinct keys."""
    return torch.topk(key, k, dim=-1, largest=False, sorted=True)


def largest(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries of the last axis, descending, **ties broken by index (lowest first)**.

    That is what ONNX's TopK specifies, so the exported graph (traced: one constant-K TopK) and eager PyTorch agree
    even on flat images, where many scores are exactly equal. Eager `torch.topk` leaves the order of ties
    unspecified, so eager code takes a stable descending sort instead: the same rule, the same result.
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return torch.topk(x, k, dim=-1, largest=True, sorted=True)
    values, index = torch.sort(x, dim=-1, descending=True, stable=True)
    return values[..., :k], index[..., :k]


def compact(valid: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the valid entries of each row, in their order, moved to the front; (B, L) bool -> (B, k) int64."""
    index = torch.arange(valid.shape[-1], device=valid.device, dtype=torch.float32)  # (L,)
    key = index + BIG * (~valid).float()  # (B, L)
    return smallest(key, k)[1]  # (B, k)


def first_argmax(x: torch.Tensor) -> torch.Tensor:
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


def quotas(keep: int, crop: torch.Tensor) -> torch.Tensor:
    """Exact-mode saliency quota per crop: floor(keep/N), plus one for the first keep mod N crops; (N,) int64."""
    n_crops = crop.new_full((), crop.shape[0])  # () a tensor, so a symbolic N traces as data, not as a TopK K
    budget = crop.new_full((), keep)
    return idiv(budget, n_crops) + (crop < imod(budget, n_crops)).long()  # (N,)


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, -1, index)


def positions_to_mask(num_positions, *position_lists: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Scatter the chosen entries of several (positions, chosen) pairs into a (B, NP) 0/1 float mask.

    Entries that are not chosen write to a spare column NP, so duplicate indices always write the same value.
    """
    first = position_lists[0][0]
    buf = first.new_zeros((first.shape[0], num_positions + 1), dtype=torch.float32)  # (B, NP+1)
    for pos, chosen in position_lists:
        target = torch.where(chosen, pos, num_positions)  # (B, L)
        buf = buf.scatter(1, target, torch.ones_like(target, dtype=torch.float32))
    return buf[:, :num_positions]  # (B, NP)


def mask_to_positions(mask: torch.Tensor, k: int) -> torch.Tensor:
    """The k positions of a (B, NP) 0/1 mask that holds exactly k ones, ascending."""
    pos = torch.arange(mask.shape[-1], device=mask.device, dtype=torch.float32)  # (NP,)
    key = torch.where(mask > 0, pos, BIG + pos)  # (B, NP)
    return smallest(key, k)[1]  # (B, k) int64


def per_crop_top(saliency: torch.Tensor, keep: int, quota: torch.Tensor, legacy_offset: bool):
    """Per-crop top-`quota[n]` saliency, descending inside each crop block, blocks concatenated crop 0 first.

    saliency (B, N, P), quota (N,) int -> values (B, keep), positions (B, keep); entries past sum(quota) are padding.
    """
    B, N, P = saliency.shape
    per_crop = min(keep, P)  # constant K, whatever N is
    values, local = largest(saliency, per_crop)  # (B, N, per_crop)
    crop = torch.arange(N, device=saliency.device)  # (N,)
    offset = crop if legacy_offset else crop * P  # the released code's defect maps crop n to +n
    positions = local + offset[:, None]  # (B, N, per_crop)
    valid = torch.arange(per_crop, device=saliency.device)[None, :] < quota[:, None]  # (N, per_crop)
    valid = valid[None].expand(B, N, per_crop).reshape(B, N * per_crop)  # (B, N*per_crop)
    order = compact(valid, keep)  # (B, keep)
    return take(values.reshape(B, -1), order), take(positions.reshape(B, -1), order)  # (B, keep) each




def all_positions(batch: int, num_positions: int, device) -> torch.Tensor:
    """Every position, (B, N*P): what every method returns when nothing is to be dropped."""
    return torch.arange(num_positions, device=device).expand(batch, -1).clone()  # (B, NP)
