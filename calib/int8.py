"""The INT8 vision graph as explicit Q/DQ ONNX, from the FP32 graph and calibration feeds.

Tool: ONNX Runtime's own `quantize_static` (QDQ format), already in both ONNX Runtime packages. NVIDIA ModelOpt's
`modelopt.onnx.quantization` would be the TensorRT-first choice, but its onnx extra pins onnx ~= 1.21 and
onnxruntime-gpu ~= 1.24 and pulls cupy, which clash with onnxruntime-genai-cuda (onnxruntime-gpu >= 1.31): one
environment could not build both halves of a bundle.

What it writes: Q/DQ pairs on the inputs of MatMul, Gemm and Conv only, per-channel INT8 weights, in one of two
flavours chosen by the bundle's target:

* `cuda` (TensorRT, Jetson): symmetric INT8 activations and weights (S8S8): what TensorRT's explicit quantization
  fuses into INT8 kernels; the graph passes the TensorRT lint.
* `cpu`: UINT8 activations (asymmetric) with INT8 weights (U8S8): ONNX Runtime's fast path on x86 CPUs (its own
  guidance). Measured at CLIP-L shapes, 5 crops, on a 2-core CPU: U8S8 1.77x faster than FP32, S8S8 1.32x (same
  held-out recall, 0.94 with random weights). TensorRT does not take UINT8 Q/DQ, so a cpu-target INT8 graph is not
  for TensorRT. Weights are 8-bit (`full_range`) when the build's CPU has integer dot products (VNNI, AMX, the Arm
  dot product: int32 accumulation) and 7-bit (`reduce_range`) otherwise, where the U8S8 kernels' 16-bit
  intermediate (`vpmaddubsw`) would saturate. 7-bit weights cost accuracy for nothing on a dot-product CPU:
  measured at Qwen2.5-VL's tower shapes (644x476, random weights, an Intel Xeon with AMX), held-out recall 0.83
  with 7-bit weights, 0.91 with 8-bit. A full-range graph is run only on CPUs with integer dot products (the
  runtime falls back to the FP32 graph elsewhere: `adafv.runtime.placement`).
 The pixel table, the selection subgraph (saliency row, relevance, AdaFV), every LayerNorm and every Softmax
stay float32 (excluded by name; a Softmax's input also loses the Q/DQ pair the quantiser puts on the MatMul before
it, which ONNX Runtime would otherwise fuse into an 8-bit QLinearSoftmax: `float_softmax_inputs`). MinMax
calibration over the feeds, one sample's activations in memory at a time
(a CLIP-L graph's intermediate tensors are gigabytes per sample).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .regions import int8_excluded

QUANTIZED_OPS = ["MatMul", "Gemm", "Conv"]


def fewest_crops(feed: dict[str, np.ndarray], crops: int) -> dict[str, np.ndarray]:
    """A feed cut to its first `crops` crops (the base view and a 1 x (crops - 1) strip of the grid): the same
    tower and projector statistics, at the memory of the smallest image (a 5-crop CLIP-L feed needs ~16 GB to
    calibrate, a 3-crop one ~10 GB)."""
    if feed["pixel_values"].shape[0] <= crops or "image_grid" not in feed:
        return feed
    return {**feed, "pixel_values": feed["pixel_values"][:crops], "image_grid": np.array([1, crops - 1], np.int64)}


def float_softmax_inputs(model) -> int:
    """Take the Q/DQ pair off each Softmax's input, in place; returns how many. The quantiser leaves every Softmax
    itself float32 but quantises the output of the MatMul before it (QK^T), so the graph reads DequantizeLinear ->
    Softmax -> QuantizeLinear, which ONNX Runtime fuses into QLinearSoftmax: an 8-bit softmax at run time. Fed the
    MatMul's float output directly, the Softmax stays float32 in the kernels too (the PV MatMul still gets its
    quantised input)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for name in n.input:
            readers[name] = readers.get(name, 0) + 1
    dropped, params, count = set(), set(), 0
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or readers[dq.output[0]] != 1 or readers[q.output[0]] != 1:
            continue
        if not q.name or not dq.name:  # nodes are told apart by name below (the quantiser names every node)
            continue
        node.input[0] = q.input[0]  # the float tensor the pair was made from
        dropped.update((q.name, dq.name))
        params.update([*q.input[1:], *dq.input[1:]])  # their scales and zero points
        count += 1
    if not count:
        return 0
    kept = [n for n in model.graph.node if n.name not in dropped]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {name for n in kept for name in n.input}
    initializers = [t for t in model.graph.initializer if t.name not in params or t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    return count


def quantize(
    src: Path,
    dst: Path,
    feeds: Iterable[dict[str, np.ndarray]],
    crops: int | None = None,
    target: str = "cuda",
    full_range: bool = False,
) -> dict:
    """Write `dst` (+ its external data) from the FP32 graph `src`, calibrated on `feeds` (each cut to `crops`
    crops when given), in the flavour of `target` (cuda: S8S8 for TensorRT; cpu: U8S8, with 8-bit weights when
    `full_range`, for CPUs with integer dot products, else 7-bit); returns facts."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    feeds = [fewest_crops(f, crops) if crops else f for f in feeds]
    if not feeds:
        from adafv.errors import BuildError

        raise BuildError("INT8 calibration got no images the vision graph takes")

    class Reader(CalibrationDataReader):
        """One sample per calibration pass (ONNX Runtime's strided MinMax merges the ranges across passes)."""

        def __init__(self):
            self.set_range(0, len(feeds))

        def __len__(self):
            return len(feeds)

        def set_range(self, start_index: int, end_index: int):
            self.it = iter(feeds[start_index:end_index])

        def get_next(self):
            return next(self.it, None)

    excluded = int8_excluded(onnx.load(str(src), load_external_data=False))
    cpu = target == "cpu"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing" on every run: advice for other graphs, not news here
    try:
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8 if cpu else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=cpu and not full_range,  # U8S8 without dot products: 7-bit weights (16-bit saturation)
            op_types_to_quantize=QUANTIZED_OPS,
            nodes_to_exclude=excluded,
            use_external_data_format=True,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": not cpu, "WeightSymmetric": True, "CalibStridedMinMax": 1},
        )
        data = dst.with_name(dst.name + ".data")
        if data.exists():  # written through a private temporary file (absent when every weight is small)
            data.chmod(0o644)
    finally:
        root.setLevel(level)
    model = onnx.load(str(dst), load_external_data=False)
    unfused = float_softmax_inputs(model)
    if unfused:
        onnx.save(model, str(dst))  # the graph only: its weights file is untouched
    ops = [n.op_type for n in model.graph.node]
    return {
        "calibration_samples": len(feeds),
        "fp32_nodes": len(excluded),
        "quantize_nodes": ops.count("QuantizeLinear"),
        "dequantize_nodes": ops.count("DequantizeLinear"),
        "tool": "onnxruntime.quantization.quantize_static",
        "flavour": "U8S8 (ONNX Runtime CPU)" if cpu else "S8S8 symmetric (TensorRT)",
        "softmax_inputs_kept_float": unfused,
        "weight_bits": 7 if cpu and not full_range else 8,
        "needs_integer_dot_products": bool(cpu and full_range),
    }
