"""Text-to-image relevance (docs/method.md §2): how strongly each visual token matches the question.

The question is represented by the LLM's *input embeddings* of the text after the image (no LLM layer runs); the
visual tokens are taken after the projector, i.e. in the same space. Pure function, float32 math, traceable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def text_relevance(
    visual: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor | None = None,
    temperature: float = 100.0,
) -> torch.Tensor:
    """visual (B, Nv, D), text (B, T, D), text_mask (B, T) bool (True = real token) -> relevance (B, Nv).

    `relevance[v] = max over real text tokens t of softmax over v of (temperature * cos(text_t, visual_v))`.
    The softmax runs over all Nv visual tokens (all crops). A row whose mask is all False gets zeros.
    """
    v = F.normalize(visual.float(), dim=-1)  # (B, Nv, D)
    t = F.normalize(text.float(), dim=-1)  # (B, T, D)
    cosine = torch.matmul(t, v.transpose(1, 2))  # (B, T, Nv)
    prob = torch.softmax(temperature * cosine, dim=-1)  # (B, T, Nv)
    if text_mask is not None:
        prob = torch.where(text_mask[:, :, None].bool(), prob, 0.0)  # padding tokens never win the max
    return prob.amax(dim=1)  # (B, Nv)
