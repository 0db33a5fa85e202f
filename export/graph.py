"""The vision graph: HF vision tower + projector + AdaFV selection as one module with a fixed keep, and its ONNX
export (torch.onnx dynamo exporter, opset 18).

Inputs:  pixel_values (crops, 3, H, W) uint8     crops dynamic in [min_crops, max_crops]; the processor's rescale +
                                                 normalize runs inside (PixelTable), so the host sends bytes.
                                                 LLaVA: square crops (H = W = S); Qwen2.5-VL: one image at the
                                                 bundle's fixed resolution, patchified inside the graph
         text_embeds  (text, D) float32          the LLM input embeddings of the text after the image, text dynamic
         image_grid   (2,) int64                 [rows, cols] of high-resolution crops (anyres models only)
Outputs: kept_tokens    (keep, D) float32        in the LLM's reading order
         kept_order (keep,) int64                crop-major positions, in the same order (-1 = padding, paper mode);
                                                 Qwen: raster indices on the merged grid (row * cols + col)
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adafv import methods
from adafv.config import GRAPH_METHODS, TOPK_LIMIT, AdaFVConfig
from adafv.errors import ConfigError
from adafv.runtime import contract
from adafv.vision import SelectTokens, VisualTokens, ZipTokens

OPSET = 18
OUTPUTS = list(contract.OUTPUTS)


class PixelTable(nn.Module):
    """uint8 pixels (N, 3, S, S) -> float32 pixel_values through the processor's own per-channel table of the 256
    byte values (`adafv.runtime.preprocess.value_table`): one Gather, bit-exact with transformers' float64-then-
    float32 arithmetic. The uint8 input is first cast to float (TensorRT casts uint8 only to float types), then to
    int64 indices; both casts are exact for 0..255."""

    def __init__(self, table: np.ndarray):
        super().__init__()
        table = torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32))  # (3, 256)
        if table.shape != (3, 256):
            raise ConfigError(f"the pixel table must be (3, 256), got {tuple(table.shape)}")
        self.register_buffer("table", table.reshape(-1, 1))  # (768, 1) channel-major
        self.register_buffer("offset", torch.arange(3).reshape(1, 3, 1, 1) * 256)  # (1, 3, 1, 1) int64

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        index = pixels.float().long() + self.offset  # (N, 3, S, S) into the flat table
        # one Gather with the index's own shape: no Shape/Reshape of the uint8 input (TensorRT rejects those)
        return nn.functional.embedding(index, self.table).squeeze(-1)  # (N, 3, S, S) float32


class VisionGraph(nn.Module):
    """pixel_values (uint8), text_embeds[, image_grid] -> kept_tokens (keep, D), kept_order (keep,)."""

    def __init__(self, visual: VisualTokens, config: AdaFVConfig, anyres: bool, pixel_table: np.ndarray):
        super().__init__()
        self.pixels = PixelTable(pixel_table)
        self.visual = visual  # the arch's graph_visual: LLaVA's VisualTokens, or Qwen's tower at a fixed grid
        side = getattr(visual, "patches_per_side", None)  # None: one image read in raster order (Qwen)
        self.merges = methods.get(config.method).merges  # visionzip: merges before the projector, not after
        if self.merges:
            self.zip = ZipTokens(config, side)
        else:
            self.select = SelectTokens(config, side)
        self.anyres = anyres

    def forward(self, pixel_values, text_embeds, image_grid=None):
        grid_cols = image_grid[1] if self.anyres else 1
        if self.merges:  # text_embeds stays an input of the graph (unused), so every bundle is fed alike
            hidden, saliency, keys = self.visual.hidden(self.pixels(pixel_values))  # (N, P, C), (N, P), (N, P, E)
            features, positions, _ = self.zip(hidden, saliency, keys, grid_cols)  # (keep, C), (keep,)
            return self.visual.projector(features), positions  # (keep, D), (keep,)
        tokens, saliency = self.visual(self.pixels(pixel_values))  # (N, P, D), (N, P)
        return self.select(tokens, saliency, text_embeds.to(tokens.dtype), None, grid_cols)


@dataclasses.dataclass(frozen=True)
class GraphShapes:
    """The ranges the graph (and a TensorRT optimization profile) accepts."""

    crops: tuple[int, int]  # (min, max)
    max_text: int
    image_hw: tuple[int, int]  # (height, width) of each crop: (S, S); Qwen: the bundle's fixed resolution
    hidden_size: int  # D, the LLM width
    patches_per_crop: int  # visual tokens per crop (Qwen: merged tokens of the image)
    anyres: bool

    def __post_init__(self):
        if not 1 <= self.crops[0] <= self.crops[1]:
            raise ConfigError(f"bad crop range {self.crops}")
        if self.max_text < 1:
            raise ConfigError(f"max_text must be >= 1, got {self.max_text}")

    def contract(self, keep: int) -> contract.VisionContract:
        """The graph's I/O contract (adafv.runtime.contract) at a fixed keep."""
        return contract.VisionContract(self.image_hw, self.hidden_size, keep, self.crops, self.max_text, self.anyres)

    @property
    def input_names(self) -> list[str]:
        return self.contract(1).input_names


def check_keep(config: AdaFVConfig, shapes: GraphShapes) -> None:
    """keep must fit the smallest image the graph accepts and TensorRT's TopK; raised before any work."""
    fewest = shapes.crops[0] * shapes.patches_per_crop
    if config.keep >= TOPK_LIMIT:
        raise ConfigError(f"keep={config.keep} is too large: TensorRT's TopK needs K < {TOPK_LIMIT}")
    if config.keep >= fewest:
        raise ConfigError(
            f"keep={config.keep} is not smaller than the visual tokens of the smallest image this model produces "
            f"({shapes.crops[0]} crop(s) x {shapes.patches_per_crop} = {fewest}); nothing would be dropped"
        )
    if config.method not in GRAPH_METHODS:
        raise ConfigError(f"method {config.method!r} cannot be compiled into a vision graph "
                          f"({', '.join(GRAPH_METHODS)})")  # fmt: skip
    if config.mode == "paper" and config.keep < 2 * shapes.crops[1]:
        raise ConfigError(f"paper mode needs keep >= 2 * max crops = {2 * shapes.crops[1]}, got {config.keep}")


def example_inputs(shapes: GraphShapes, crops: int, text: int, grid=(1, 2), seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    (H, W), D = shapes.image_hw, shapes.hidden_size
    pixel_values = torch.randint(0, 256, (crops, 3, H, W), generator=g, dtype=torch.uint8)  # (N, 3, H, W)
    text_embeds = torch.randn((text, D), generator=g) * 0.02  # (T, D)
    if not shapes.anyres:
        return pixel_values, text_embeds
    return pixel_values, text_embeds, torch.tensor(grid, dtype=torch.int64)


def export_onnx(graph: VisionGraph, shapes: GraphShapes, path: Path) -> dict:
    """Export to `path` (+ `path.data` external weights). Returns facts for the manifest."""
    io = shapes.contract(1)
    single = io.single_crop  # LLaVA-1.5: always one crop, a static axis
    # >= 2 crops and >= 2 text tokens in the example, else the exporter specialises the axis to a constant
    n = 1 if single else max(2, shapes.crops[0])
    example = example_inputs(shapes, n, min(5, shapes.max_text), grid=(1, n - 1) if shapes.anyres else (1, 1))
    dynamic = {name: {axis: torch.export.Dim(dim, min=lo, max=hi) for axis, (dim, lo, hi) in axes.items()}
               for name, axes in io.dynamic_axes().items()}  # fmt: skip
    start = time.perf_counter()
    export_module(graph, example, shapes.input_names, OUTPUTS, path, dynamic)
    return {"opset": OPSET, "export_seconds": round(time.perf_counter() - start, 2)}


class TowerGraph(nn.Module):
    """The vision graph without the selection: uint8 pixels (N, 3, S, S) -> every projected token (N*P, D). What
    `adafv bench` compares against to show what the selection costs inside the graph."""

    def __init__(self, visual: VisualTokens, pixel_table: np.ndarray):
        super().__init__()
        self.pixels = PixelTable(pixel_table)
        self.visual = visual

    def forward(self, pixel_values):
        tokens, _ = self.visual(self.pixels(pixel_values))  # (N, P, D)
        return tokens.reshape(-1, tokens.shape[-1])  # (N*P, D)


def export_tower(tower: TowerGraph, shapes: GraphShapes, path: Path) -> None:
    """Export a TowerGraph with the same crop range as the vision graph."""
    single = shapes.crops[1] == 1  # one crop (Qwen's one image): a static axis
    n = 1 if single else max(2, shapes.crops[0])
    example = (example_inputs(shapes, n, 1)[0],)
    axes = {} if single else {0: torch.export.Dim("crops", min=shapes.crops[0], max=shapes.crops[1])}
    export_module(tower, example, ["pixel_values"], ["tokens"], path, {"pixel_values": axes})


def export_module(
    module: nn.Module, example: tuple, inputs: list[str], outputs: list[str], path: Path, dynamic: dict | None = None
) -> None:
    """Export any module as the vision graph is exported (the same exporter, opset and clean-up) to `path` (+ its
    weights file); axes not named in `dynamic` are static at the example's sizes."""
    for noisy in ("torch.onnx", "onnxscript"):  # "torchvision is not installed...", "Skipping constant folding..."
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(),
            example,
            dynamo=True,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=dynamic or None,
            external_data=True,
            optimize=True,
            verbose=False,
        )
        program.save(str(path), external_data=True)
    _shapes_from_float_pixels(path)


def _shapes_from_float_pixels(path: Path) -> None:
    """The exporter reads the symbolic crop count with a Shape of the uint8 input; TensorRT lets a uint8 tensor into
    nothing but a Cast to float. Read the shape from that Cast's output instead (the same shape) and move the Cast
    first so the graph stays in topological order. Rewrites the .onnx only (its weights file is untouched)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    u8 = {v.name for v in model.graph.input if v.type.tensor_type.elem_type == onnx.TensorProto.UINT8}
    nodes = list(model.graph.node)
    casts = {n.input[0]: n for n in nodes if n.op_type == "Cast" and n.input[0] in u8}
    changed = False
    for node in nodes:
        if node.op_type == "Shape" and node.input[0] in casts:
            node.input[0] = casts[node.input[0]].output[0]
            changed = True
    if changed:
        first = list(casts.values())
        del model.graph.node[:]
        model.graph.node.extend(first + [n for n in nodes if n not in first])
        onnx.save(model, str(path))
