"""The vision graph's contract, in one place (optimum's `OnnxConfig` is the model): its inputs and outputs with
shapes and dtypes, which axes are dynamic and over what range, the feed dict every caller builds, the check that a
loaded graph is what the manifest says, and the tolerances each verification uses. Torch-free: the exporter writes
the graph and the manifest from it, the runtime, the TensorRT runner, calibration and the bench feed it through it.

    inputs   pixel_values  (crops, 3, H, W) uint8     crops dynamic over the engine's range (LLaVA: square crops of
                                                      side S; Qwen: one image at the bundle's fixed resolution)
             text_embeds   (text, D)        float32   text dynamic in 1..max_text (the tokens after the image)
             image_grid    (2,)             int64     [rows, cols] of high-resolution crops; anyres graphs only
    outputs  kept_tokens    (keep, D)       float32   in the LLM's reading order (paper mode pads with zeros)
             kept_order     (keep,)         int64     each kept token's position n*P + p in the same reading order,
                                                      -1 for padding (Qwen: the raster index row * cols + col on
                                                      the merged grid). Not an answer's `kept_positions`: that is
                                                      the same set, ascending, without padding
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError

PIXELS, TEXT, GRID = "pixel_values", "text_embeds", "image_grid"
TOKENS, ORDER = "kept_tokens", "kept_order"
OUTPUTS = (TOKENS, ORDER)
DTYPES = {PIXELS: np.uint8, TEXT: np.float32, GRID: np.int64, TOKENS: np.float32, ORDER: np.int64}


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """What every verification of a vision graph accepts, against the PyTorch module or the FP32 graph."""

    positions: str = "identical"  # the FP32 graph in ONNX Runtime vs PyTorch: kept positions
    tokens_atol: float = 1e-4  # ... and kept tokens (max |diff|)
    fp16_min_overlap: float = 0.9  # the FP16 graph keeps at least this share of the FP32 positions, per probe
    int8_min_recall: float = 0.9  # the INT8 graph's mean recall of the FP32 positions on held-out images
    trt_atol: dict = dataclasses.field(default_factory=lambda: {"fp32": 1e-3, "fp16": 5e-2})  # TensorRT vs ORT


TOLERANCES = Tolerances()


@dataclasses.dataclass(frozen=True)
class VisionContract:
    """One bundle's vision graph: the facts its inputs and outputs are made of."""

    image_hw: tuple[int, int]  # (height, width) of what the graph takes: a crop (S, S), or Qwen's fixed resolution
    hidden_size: int
    keep: int
    crops: tuple[int, int]
    max_text: int
    anyres: bool

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> VisionContract:
        v = manifest["vision"]
        return cls(image_hw=tuple(v["inputs"][PIXELS]["shape"][2:4]), hidden_size=v["hidden_size"],
                   keep=manifest["selection"]["keep"], crops=tuple(v["crops"]), max_text=v["max_text"],
                   anyres=GRID in v["inputs"])  # fmt: skip

    @property
    def input_names(self) -> list[str]:
        return [PIXELS, TEXT, GRID] if self.anyres else [PIXELS, TEXT]

    @property
    def single_crop(self) -> bool:
        return self.crops[1] == 1

    def dynamic_axes(self) -> dict[str, dict[int, tuple[str, int, int]]]:
        """input -> {axis: (name, min, max)}: the crops (unless always one) and the text length."""
        axes: dict[str, dict[int, tuple[str, int, int]]] = {PIXELS: {}, TEXT: {0: ("text", 1, self.max_text)}}
        if not self.single_crop:
            axes[PIXELS] = {0: ("crops", *self.crops)}
        if self.anyres:
            axes[GRID] = {}
        return axes

    def inputs(self) -> dict[str, dict[str, Any]]:
        """The manifest's `vision.inputs`."""
        out = {PIXELS: {"shape": ["crops", 3, *self.image_hw], "dtype": "uint8"},
               TEXT: {"shape": ["text", self.hidden_size], "dtype": "float32"}}  # fmt: skip
        if self.anyres:
            out[GRID] = {"shape": [2], "dtype": "int64"}
        return out

    def outputs(self) -> dict[str, dict[str, Any]]:
        """The manifest's `vision.outputs`: static shapes."""
        return {TOKENS: {"shape": [self.keep, self.hidden_size], "dtype": "float32"},
                ORDER: {"shape": [self.keep], "dtype": "int64"}}  # fmt: skip

    def feeds(self, pixels: np.ndarray, text_embeds: np.ndarray, grid: tuple[int, int],
              text_dtype=np.float32) -> dict[str, np.ndarray]:  # fmt: skip
        """The graph's inputs by name: uint8 pixels (N, 3, S, S), text embeddings (T, D) in `text_dtype` (what the
        session takes: float16 for an FP16 graph), and for anyres graphs the crop grid (2,) int64."""
        feeds = {PIXELS: np.asarray(pixels, dtype=np.uint8),
                 TEXT: np.asarray(text_embeds).astype(text_dtype, copy=False)}  # fmt: skip
        if self.anyres:
            feeds[GRID] = np.asarray(grid, dtype=np.int64)
        return feeds

    def check_session(self, path: Path, session) -> None:
        """A loaded graph's declared shapes must be this contract's: `keep` and `D` on the static outputs, uint8
        pixels of the crop side, text embeddings of width D. A graph from another build fails here, not silently."""
        outputs = {o.name: o.shape for o in session.get_outputs()}
        inputs = {i.name: (i.shape, i.type) for i in session.get_inputs()}
        problems = []
        if outputs.get(TOKENS) != [self.keep, self.hidden_size] or outputs.get(ORDER) != [self.keep]:
            problems.append(f"its outputs are {outputs}, the manifest says keep={self.keep} and D={self.hidden_size}")
        pixels = inputs.get(PIXELS)
        side = list(self.image_hw)
        if pixels is None or pixels[1] != "tensor(uint8)" or pixels[0][1:] != [3, *side]:
            problems.append(f"its pixel input is {pixels}, the manifest says uint8 (crops, 3, {side[0]}, {side[1]})")
        text = inputs.get(TEXT)
        if text is None or text[0][-1] != self.hidden_size:
            problems.append(f"its text input is {text}, the manifest says width {self.hidden_size}")
        if problems:
            raise BundleError(f"{path} does not match the bundle's manifest: " + "; ".join(problems))
