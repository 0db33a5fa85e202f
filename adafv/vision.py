"""The visual side of AdaFV as our own modules, composed from a HF LLaVA model (never patched):

* `VisualTokens`: the CLIP tower up to the feature layer, the [CLS] saliency of that layer, and the projector;
* `reading_order`: crop-major positions -> the order the LLM reads them in;
* `SelectTokens`: scores -> kept positions -> kept tokens in reading order, for one image with a fixed keep.
  This is what the reference pipeline runs and what export/ traces into ONNX.
* `ZipTokens`: the same for VisionZip, which merges features before the projector instead of choosing projected
  tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from . import methods
from .baselines import visionzip
from .config import AdaFVConfig
from .errors import ModelError
from .ops import BIG, iclip, idiv, imod, smallest
from .relevance import text_relevance
from .saliency import ClsSaliency


class VisualTokens(nn.Module):
    """pixel_values (N, 3, S, S) -> projected visual tokens (N, P, D) and saliency (N, P).

    Runs the tower's layers only up to the one LLaVA takes its features from (`vision_feature_layer`, -2 for
    LLaVA-1.5/1.6): the last layer of the tower is never computed. Saliency comes from that same layer's [CLS] row.
    Composes the HF modules (shared, not copied): a CLIP vision tower, LLaVA's projector.
    """

    def __init__(self, tower: nn.Module, projector: nn.Module, feature_layer: int):
        super().__init__()
        layers = tower.encoder.layers
        index = feature_layer if feature_layer >= 0 else len(layers) + 1 + feature_layer  # into hidden_states
        if not 1 <= index <= len(layers):
            raise ModelError(f"vision_feature_layer={feature_layer} selects no attention layer")
        self.embeddings = tower.embeddings
        self.pre_layrnorm = tower.pre_layrnorm
        self.layers = nn.ModuleList(layers[:index])  # the last one is the layer the features come from
        self.saliency = ClsSaliency(self.layers[-1])
        self.projector = projector
        self.patches_per_side = tower.config.image_size // tower.config.patch_size

    @property
    def patches_per_crop(self) -> int:
        return self.patches_per_side**2

    def hidden(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """pixel_values (N, 3, S, S) -> the feature layer's patch features (N, P, C) (before the projector), its
        [CLS] saliency (N, P) and its attention keys averaged over heads (N, P, C/H)."""
        dtype = self.embeddings.patch_embedding.weight.dtype
        h = self.pre_layrnorm(self.embeddings(pixel_values.to(dtype)))  # (N, 1+P, C)
        for layer in self.layers[:-1]:
            h = layer(h, None)  # (N, 1+P, C)
        saliency, keys = self.saliency(h)  # (N, P), (N, P, C/H) from the feature layer's attention
        h = self.layers[-1](h, None)  # (N, 1+P, C) the features LLaVA uses
        return h[:, 1:], saliency, keys

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, saliency, _ = self.hidden(pixel_values)  # (N, P, C), (N, P)
        return self.projector(hidden), saliency  # (N, P, D), (N, P)


def reading_order(positions: torch.Tensor, patches_per_side: int, grid_cols) -> torch.Tensor:
    """Reorder crop-major positions (B, K) into the LLM's reading order; -1 padding stays last.

    The base view (crop 0) first in raster order, then the high-resolution crops stitched into one grid of
    `grid_cols` crops per row, read in global raster order (no unpadding, no newline tokens).
    """
    return torch.gather(positions, -1, reading_order_index(positions, patches_per_side, grid_cols))


def reading_order_index(positions: torch.Tensor, patches_per_side: int, grid_cols) -> torch.Tensor:
    """The permutation (B, K) that `reading_order` applies: gather anything aligned with `positions` by it.
    `patches_per_side` None: one image whose positions are raster indices already (Qwen's merged grid)."""
    if patches_per_side is None:
        key = torch.where(positions < 0, BIG, positions.float())
        return smallest(key, positions.shape[-1])[1]  # (B, K)
    side = patches_per_side
    P = side * side
    pos = iclip(positions, low=0)  # (B, K)
    crop, patch = idiv(pos, P), imod(pos, P)
    hires = iclip(crop - 1, low=0)  # index among the high-resolution crops
    row = idiv(hires, grid_cols) * side + idiv(patch, side)  # global patch row in the stitched grid
    col = imod(hires, grid_cols) * side + imod(patch, side)
    key = torch.where(crop == 0, patch, P + row * (grid_cols * side) + col)  # (B, K)
    key = torch.where(positions < 0, BIG, key.float())
    return smallest(key, positions.shape[-1])[1]  # (B, K)


def rows_layout(ordered: torch.Tensor, kept: torch.Tensor, newline: torch.Tensor, patches_per_side: int,
                grid_cols) -> torch.Tensor:  # fmt: skip
    """The `rows` layout of kept tokens: the reading order, with the model's `image_newline` embedding after each
    row of the stitched high-resolution grid that keeps at least one token (as the stock LLaVA-NeXT sequence ends
    every grid row with one; the base view has none).

    ordered (K,) crop-major positions in reading order; kept (K, D) their tokens, same order; newline (D,)
    -> (K + rows kept, D). Eager only (a Python walk over the K positions): the reference path and measurements use it.
    """
    side = patches_per_side
    P = side * side
    pieces, last_row = [], None
    for token, position in zip(kept, ordered.tolist()):
        crop, patch = divmod(position, P)
        row = None if crop == 0 else ((crop - 1) // grid_cols) * side + patch // side  # global grid row
        if last_row is not None and row != last_row:
            pieces.append(newline[None])
        pieces.append(token[None])
        last_row = row
    if last_row is not None:
        pieces.append(newline[None])
    return torch.cat(pieces).to(kept.dtype)  # (K + rows, D)


class SelectTokens(nn.Module):
    """One image, fixed keep: (tokens (N, P, D), saliency (N, P), text_embeds (T, D), text_mask (T,), grid_cols)
    -> kept_tokens (keep, D), kept_order (keep,): their positions in reading order.

    Traceable with a dynamic crop count; methods adafv (exact or paper), fastervlm and text. In paper mode the last
    keep - V rows are padding: position -1 and a zero token.
    """

    def __init__(self, config: AdaFVConfig, patches_per_side: int):
        super().__init__()
        method = methods.get(config.method)
        if not method.compilable or method.merges:
            names = ", ".join(m.name for m in methods.REGISTRY.values() if m.compilable and not m.merges)
            raise ModelError(f"SelectTokens cannot run method {config.method!r} ({names}; visionzip: ZipTokens)")
        self.config = config
        self.patches_per_side = patches_per_side

    def scores(self, tokens, saliency, text_embeds, text_mask=None):
        N, P, D = tokens.shape
        visual = tokens.reshape(1, N * P, D)  # (1, NP, D)
        mask = None if text_mask is None else text_mask[None]
        relevance = text_relevance(visual, text_embeds[None], mask, self.config.temperature)  # (1, NP)
        return visual, relevance

    def forward(self, tokens, saliency, text_embeds, text_mask=None, grid_cols=1):
        cfg = self.config
        visual, relevance = self.scores(tokens, saliency, text_embeds, text_mask)
        positions = methods.positions(cfg.method, saliency[None], relevance, cfg.keep, tokens=visual, mode=cfg.mode,
                                      legacy_offset=cfg.legacy_offset)  # (1, keep)  # fmt: skip
        positions = reading_order(positions, self.patches_per_side, grid_cols)[0]  # (keep,)
        kept = visual[0].index_select(0, iclip(positions, low=0))  # (keep, D)
        kept = torch.where(positions[:, None] >= 0, kept, 0.0)
        return kept, positions


class ZipTokens(nn.Module):
    """VisionZip for one image, fixed keep: (hidden (N, P, C), saliency (N, P), keys (N, P, E), grid_cols)
    -> merged features (keep, C) for the projector, kept_order (keep,) (positions in reading order), contextual
    (keep,) bool.

    Its own module so precision tools keep its math (similarities, the merge) in float32; the projector runs after
    it, on the keep merged features only (as VisionZip does). A contextual token's position is its target's.
    """

    def __init__(self, config: AdaFVConfig, patches_per_side: int):
        super().__init__()
        if config.method != "visionzip":
            raise ModelError(f"ZipTokens runs visionzip, not {config.method!r}")
        self.config = config
        self.patches_per_side = patches_per_side

    def forward(self, hidden, saliency, keys, grid_cols=1):
        zipped = visionzip(hidden[None], saliency[None], keys[None], self.config.keep)  # (1, keep) ...
        order = reading_order_index(zipped.positions, self.patches_per_side, grid_cols)  # (1, keep)
        positions = torch.gather(zipped.positions, -1, order)[0]  # (keep,) reading order
        features = torch.gather(zipped.features, 1, order[..., None].expand_as(zipped.features))[0]  # (keep, C)
        contextual = torch.gather(zipped.contextual, -1, order)[0]  # (keep,)
        return features, positions, contextual
