"""TensorRT engine for the vision graph, built with Polygraphy's lazy loaders where `tensorrt` imports.

    engine = EngineBytesFromNetwork(NetworkFromOnnxPath(vision.onnx), CreateConfig(profiles=[...], ...))

* Optimization profile from the graph's ranges: crops in [min, max] (opt = max), text in [1, max_text].
* FP32: the FP32 graph as is.
* FP16 on TensorRT 10 (JetPack 6): the FP32 graph with the FP16 builder flag, precision constraints `obey`, and the
  selection subgraph and LayerNorms pinned to FP32 layer by layer.
* FP16 on TensorRT 11 (no FP16/INT8 builder flags): the mixed-precision graph (calib/fp16.py) parsed as a
  strongly typed network, so the ONNX types are the engine's precisions.
* A timing cache shared by builds on the same TensorRT and GPU; the engine is named
  `vision.<tensorrt version>-sm<compute capability>.plan` (engines are not portable across either).

NOT EXERCISED BY CI: TensorRT cannot be installed on our machines (no GPU; its libraries download from NVIDIA's own
index). Everything that can be checked without it is checked by `checks.trt_lint` on every build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# the runtime owns the facts a plan is validated against (its consumer); the builder uses the same functions
from adafv.runtime.contract import OUTPUTS
from adafv.runtime.trt import TensorRTUnavailable, compute_capability, engine_name, tensorrt_version

from .checks import overlap


def _pin_fp32(names: list[str]):
    """A Polygraphy network post-processor: layers parsed from the FP32 nodes compute (and output) in FP32."""

    def apply(network):
        import tensorrt as trt

        prefixes = tuple(names)
        for layer in network:
            if layer.name in names or layer.name.startswith(prefixes):
                layer.precision = trt.float32
                for i in range(layer.num_outputs):
                    if layer.get_output(i).dtype in (trt.float16, trt.float32):
                        layer.set_output_type(i, trt.float32)
        return network

    return apply


def build_engine(
    onnx_fp32: Path,
    out_dir: Path,
    shapes,
    precision: str,
    fp32_node_names: list[str],
    onnx_fp16: Path | None = None,
    timing_cache: Path | None = None,
) -> dict:
    """Build and save the engine into out_dir; returns {file, tensorrt, sm, precision}."""
    version = tensorrt_version()
    sm = compute_capability()
    import tensorrt as trt
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        PostprocessNetwork,
        Profile,
    )

    major = int(version.split(".")[0])
    (H, W), D = shapes.image_hw, shapes.hidden_size
    lo, hi = shapes.crops
    profile = Profile()
    profile.add("pixel_values", min=(lo, 3, H, W), opt=(hi, 3, H, W), max=(hi, 3, H, W))
    profile.add("text_embeds", min=(1, D), opt=(min(64, shapes.max_text), D), max=(shapes.max_text, D))
    cache = str(timing_cache) if timing_cache else None
    if precision == "fp32":
        network = NetworkFromOnnxPath(str(onnx_fp32), strongly_typed=major >= 11)
        config = CreateConfig(profiles=[profile], load_timing_cache=cache)
    elif precision == "fp16" and major >= 11:
        if onnx_fp16 is None:
            raise TensorRTUnavailable("TensorRT >= 11 builds FP16 from the mixed-precision graph; none was given")
        network = NetworkFromOnnxPath(str(onnx_fp16), strongly_typed=True)
        config = CreateConfig(profiles=[profile], load_timing_cache=cache)
    elif precision == "fp16":
        network = PostprocessNetwork(NetworkFromOnnxPath(str(onnx_fp32)), _pin_fp32(fp32_node_names), "PinFP32")
        config = CreateConfig(fp16=True, precision_constraints="obey", profiles=[profile], load_timing_cache=cache)
    else:
        raise TensorRTUnavailable(f"TensorRT precision {precision!r} is not built here (fp32, fp16)")
    engine = EngineBytesFromNetwork(network, config=config, save_timing_cache=cache)()
    name = engine_name(version, sm)
    (out_dir / name).write_bytes(bytes(engine))
    del trt
    return {"file": name, "tensorrt": version, "sm": sm, "precision": precision}


def trt_parity(plan: Path, onnx_session, cases, atol: float) -> dict:
    """TensorRT vs ONNX Runtime on the parity cases: overlap of kept positions and max token difference."""
    from adafv.runtime.trt import PlanRunner

    runner = PlanRunner(plan)
    overlaps, worst = [], 0.0
    for case in cases:
        tokens, positions = runner.run(case.feeds)
        want_tokens, want_positions = onnx_session.run(list(OUTPUTS), case.feeds)
        overlaps.append(overlap(positions, want_positions))
        same = positions == want_positions
        if same.any():
            worst = max(worst, float(np.abs(tokens[same] - want_tokens[same]).max()))
    return {"min_position_overlap": min(overlaps), "max_token_abs_diff": worst, "atol": atol}
