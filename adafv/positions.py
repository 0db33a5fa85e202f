"""The LLM's positions for a pruned image (M-RoPE, Qwen2-VL / Qwen2.5-VL): torch-free, one home for the reference
path and the runtime.

A Qwen LLM numbers each token with three positions (temporal, height, width). Text gets (p, p, p); the merged
visual token at cell (row, col) of an image gets (g, g + row, g + col) with g the position after
`<|vision_start|>`; the text after the image resumes at g + max(rows, cols), as if the image were whole. After
pruning, each kept token keeps its cell's positions (as DART's port, TensorRT Edge-LLM, OpenVINO's CDPruner and
vLLM's EVS do); nothing is renumbered densely, so the text after the image is exactly where the unpruned sequence
puts it. Decoding continues from the largest position + 1 on all three rows.
"""

from __future__ import annotations

import numpy as np


def mrope(n_pre: int, cells, grid: tuple[int, int], n_post: int) -> np.ndarray:
    """(3, n_pre + K + n_post) int64 positions of [text before | K kept tokens | text after].

    cells (K, 2) int: (row, col) of each kept token on the merged grid, in the order the LLM reads them;
    grid (rows, cols) of the merged grid the image had before pruning.
    """
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)  # (K, 2)
    rows, cols = int(grid[0]), int(grid[1])
    if cells.size and (cells.min() < 0 or cells[:, 0].max() >= rows or cells[:, 1].max() >= cols):
        raise ValueError(f"kept cells outside the {rows}x{cols} grid")
    pre = np.broadcast_to(np.arange(n_pre, dtype=np.int64), (3, n_pre))  # (3, n_pre)
    g = n_pre
    image = np.stack([np.full(len(cells), g, dtype=np.int64), g + cells[:, 0], g + cells[:, 1]])  # (3, K)
    start = g + max(rows, cols)  # where the text after a whole image starts
    post = np.broadcast_to(start + np.arange(n_post, dtype=np.int64), (3, n_post))  # (3, n_post)
    return np.concatenate([pre, image, post], axis=1)  # (3, L)


def next_position(positions: np.ndarray) -> int:
    """The position of the first generated token after `positions` (3, L): every later token adds one."""
    return int(positions.max()) + 1 if positions.size else 0


def cells(positions, cols: int) -> np.ndarray:
    """Raster indices on a merged grid of `cols` columns -> (K, 2) (row, col)."""
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    return np.stack([positions // cols, positions % cols], axis=1)
