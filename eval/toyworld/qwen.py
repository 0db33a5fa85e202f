"""The toy-world Qwen2.5-VL's geometry and tower stage: what training and the measurement need that LLaVA's crops
do not give.

Qwen2.5-VL reads one image at its own resolution (multiples of 16 px here: 8-px patches, 2x2 merged into 16-px
tokens), so a scene's objects map to *cells* of the merged grid, not to crops: `cell_objects` maps each patch and
each merged token to the object under it, through the processor's own resize (smart_resize) with nearest
resampling. The tower has no [CLS]: adafv's saliency is the attention each merged token receives in the last
full-attention block (adafv/archs/qwen.py); the tower stage (`train.pretrain_qwen_tower`) trains it to land on the
distractor. The tower runs through adafv's own module (`visual`: `Qwen25VL.visual`, sharing the HF weights), one
image at a time, so that the saliency training shapes and the features the LLM learns to read are the ones the
selection and the measurement use.
"""

from __future__ import annotations

import numpy as np
import torch

FAMILY = "qwen2_5_vl"
MERGE = 2  # the PatchMerger's 2x2 (QWEN_VISION's spatial_merge_size)


def processed(processor, images) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """The image processor over a list of images -> one (pixel_values (rows*cols, 3*2*p*p), (rows, cols)) each."""
    out = processor.image_processor(images=images, return_tensors="pt")
    grids = [(int(h), int(w)) for _, h, w in out["image_grid_thw"].tolist()]
    chunks = torch.split(out["pixel_values"], [h * w for h, w in grids])
    return list(zip(chunks, grids))


def _resized_labels(processor, scene) -> np.ndarray:
    """The scene's label map (object id + 1 per pixel, 0 none) at the size the processor resizes its image to."""
    from PIL import Image

    from adafv.archs.qwen import smart_resize

    ip = processor.image_processor
    h, w = scene.labels.shape
    factor = ip.patch_size * ip.merge_size
    rh, rw = smart_resize(h, w, factor, ip.size["shortest_edge"], ip.size["longest_edge"])  # (min, max) pixels
    return np.asarray(Image.fromarray(scene.labels).resize((rw, rh), Image.NEAREST))  # (rh, rw)


def _majority(blocks: np.ndarray, area: int) -> tuple[np.ndarray, np.ndarray]:
    """blocks (n, area) object ids -> the object covering most of each block if it covers >= 1/8 of it (else 0),
    and the share it covers."""
    count = np.stack([(blocks == i).sum(1) for i in range(8)], axis=1)  # (n, 8) pixels per object id
    count[:, 0] = 0
    which, most = count.argmax(1), count.max(1)
    return np.where(most * 8 >= area, which, 0), most / area


def cell_objects(processor, scene) -> dict[str, np.ndarray]:
    """Which object covers each patch and each merged token of the processed image (0 none, i + 1 objects[i]):
    `patches` (rows*cols,) in the processor's patch order (merge units of 2x2, raster within), `patch_share` the
    share of the patch it covers, `cells` (P,) raster on the merged grid, and `grid` (rows, cols) of patches."""
    labels = _resized_labels(processor, scene)
    if labels.max() >= 8:
        raise ValueError("a scene has more than 7 objects: the label maps hold ids 1-7 (scenes_v2.MAX_SMALL)")
    p = processor.image_processor.patch_size
    rows, cols = labels.shape[0] // p, labels.shape[1] // p
    # (rows/2, cols/2, 2, 2, p, p): merge units in raster order, their 2x2 patches raster within
    units = labels.reshape(rows // MERGE, MERGE, p, cols // MERGE, MERGE, p).transpose(0, 3, 1, 4, 2, 5)
    patches, share = _majority(units.reshape(rows * cols, p * p), p * p)
    cells, _ = _majority(units.reshape(rows * cols // MERGE**2, MERGE**2 * p * p), (MERGE * p) ** 2)
    return {"patches": patches, "patch_share": share, "cells": cells, "grid": (rows, cols)}


def visual(model):
    """adafv's Qwen2.5-VL vision module over the model's tower (shared weights): hidden() gives the grouped
    features, the global-attention saliency and keys; projector() is the PatchMerger."""
    from adafv import archs

    return archs.get(FAMILY).visual(model)


def image_tokens(model, processor, batch, module=None) -> tuple[list[torch.Tensor], list[tuple[int, int]], list]:
    """The merged visual tokens the LLM reads, one image at a time, the tower frozen (no gradients), the merger
    trainable: ([tokens (P_i, D)], [merged grid (rows, cols)], [cell_objects of each scene])."""
    module = module or visual(model)
    tokens, grids, objects = [], [], []
    for scene, (pixel_values, grid) in zip(batch, processed(processor, [s.image for s in batch])):
        with torch.no_grad():
            grouped, _, _ = module.hidden(pixel_values, grid)  # (1, P, 4C)
        tokens.append(module.projector(grouped)[0])  # (P, D)
        grids.append((grid[0] // MERGE, grid[1] // MERGE))
        objects.append(cell_objects(processor, scene))
    return tokens, grids, objects


def token_objects(processor, scene) -> torch.Tensor:
    """(P,) the object id + 1 under each merged token (raster), 0 none: the measurement's target map."""
    return torch.from_numpy(cell_objects(processor, scene)["cells"]).long()
