"""Visual saliency (docs/method.md §1): the [CLS] query's attention to the patches in one vision-encoder layer.

Only the [CLS] row of that one layer is computed, from the layer's own LayerNorm and q/k projections: no eager
attention, no attention maps materialised anywhere, so the rest of the tower keeps its fast (sdpa) attention.
"""

from __future__ import annotations

import torch
from torch import nn


def cls_attention_and_keys(
    hidden: torch.Tensor,
    norm: nn.Module,
    q_proj: nn.Module,
    k_proj: nn.Module,
    num_heads: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (B, 1+P, C), the *input* of the attention layer ([CLS] first) -> saliency (B, P), keys (B, P, C/H).

    saliency: post-softmax attention of the [CLS] query to the P patch keys, mean over heads; the softmax runs over
    all 1+P keys and the [CLS] column is dropped without renormalising. Equals `attentions[layer][:, :, 0, 1:].mean(1)`
    of an eager run. keys: the patches' attention keys (k_proj, unscaled) averaged over heads, in float32: the
    similarity VisionZip merges its contextual tokens by (adafv.baselines.visionzip).
    """
    B, S, C = hidden.shape
    head_dim = C // num_heads
    h = norm(hidden)  # (B, 1+P, C)
    q = q_proj(h[:, :1]).view(B, 1, num_heads, head_dim).transpose(1, 2)  # (B, H, 1, dh)
    k = k_proj(h).view(B, S, num_heads, head_dim).transpose(1, 2)  # (B, H, 1+P, dh)
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale  # (B, H, 1, 1+P)
    attention = torch.softmax(logits, dim=-1)  # (B, H, 1, 1+P) float32
    keys = k[:, :, 1:].float().mean(dim=1)  # (B, P, dh)
    return attention[:, :, 0, 1:].mean(dim=1), keys  # (B, P), (B, P, dh)


def cls_attention(hidden: torch.Tensor, *layer, **named) -> torch.Tensor:
    """hidden (B, 1+P, C) -> saliency (B, P): `cls_attention_and_keys` (the same arguments) without the keys."""
    return cls_attention_and_keys(hidden, *layer, **named)[0]


class ClsSaliency(nn.Module):
    """`cls_attention` as a module over one attention layer (a CLIP encoder layer): its own scope in exported
    graphs, so precision tools can keep it in float32."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.norm = layer.layer_norm1
        self.q_proj = layer.self_attn.q_proj
        self.k_proj = layer.self_attn.k_proj
        self.num_heads = layer.self_attn.num_heads
        self.scale = layer.self_attn.scale

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (B, 1+P, C) -> saliency (B, P), keys (B, P, C/H); unused keys vanish from traced graphs."""
        return cls_attention_and_keys(hidden, self.norm, self.q_proj, self.k_proj, self.num_heads, self.scale)
