"""Where a bundle runs, decided once: which vision backend (ONNX Runtime, or the bundle's TensorRT engine when it was
built for this machine's TensorRT and GPU), which vision graph file, which execution providers for the vision graph
and for the decoder, why, and the one-line warning when the bundle was built for another target. The pipeline, `adafv
doctor` and `adafv plan` all ask here (plan, for a device it is not running on, through `graph_for`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .errors import BundleError
from .providers import GPU_PROVIDERS, best_providers, target_mismatch

BACKENDS = ("auto", "onnxruntime", "tensorrt")


@dataclasses.dataclass(frozen=True)
class Placement:
    backend: str  # "onnxruntime" | "tensorrt"
    vision_file: str  # the graph (or TensorRT engine) file, relative to the bundle
    plan: Path | None  # the TensorRT engine, when the backend is tensorrt
    vision_providers: list[str]
    decoder_providers: list[str]
    why: str
    warning: str | None  # the bundle was built for another target than the decoder's provider

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["plan"] = str(self.plan) if self.plan else None
        return d


def decide(root: Path, manifest: dict[str, Any], providers: list[str] | None = None,
           backend: str = "auto") -> Placement:  # fmt: skip
    """The placement of the bundle at `root` here. `providers`: default, those that really work here (TensorRT,
    CUDA, CPU); `backend`: `tensorrt` requires the bundle's engine to match this machine (a BundleError naming both
    versions otherwise), `auto` uses it when it does."""
    if backend not in BACKENDS:
        raise BundleError(f"unknown backend {backend!r}; choose {', '.join(BACKENDS)}")
    providers = list(providers) if providers else best_providers()
    plan = matching_plan(root, manifest, required=backend == "tensorrt")
    engines = manifest["vision"].get("engines", [])
    if plan is not None and backend != "onnxruntime":
        chosen, file, why = "tensorrt", plan.name, f"its TensorRT engine {plan.name} matches this machine"
    else:
        chosen, file = "onnxruntime", graph_file(manifest, providers)
        if backend == "onnxruntime":
            why = "asked for ONNX Runtime"
        elif engines:
            why = "its TensorRT engines were built for another TensorRT or GPU (or none here)"
        else:
            why = f"no TensorRT engine in the bundle ({manifest['vision'].get('tensorrt', 'not built')})"
        if (
            providers[0] == "CPUExecutionProvider"
            and "int8" in manifest["vision"]["files"]
            and not int8_runs_here(manifest)
        ):
            why += ("; its INT8 graph has 8-bit weights, which need integer dot products (VNNI, AMX, the Arm dot "
                    "product) this CPU lacks: the FP32 graph")  # fmt: skip
    decoder = decoder_providers(providers)
    return Placement(chosen, file, plan if chosen == "tensorrt" else None, providers, decoder, why,
                     target_mismatch(manifest["target"], decoder[0]))  # fmt: skip


def graph_for(manifest: dict[str, Any], gpu: bool) -> str:
    """The vision graph file a device runs best, from its kind alone (`adafv plan` for a device elsewhere)."""
    return graph_file(manifest, ["CUDAExecutionProvider"] if gpu else ["CPUExecutionProvider"], here=False)


def graph_file(manifest: dict[str, Any], providers: list[str], here: bool = True) -> str:
    """The vision graph a provider runs best: INT8 on the CPU (integer kernels), FP16 on a GPU, else FP32; the
    TensorRT provider takes the FP32 graph and applies FP16 itself. An INT8 graph with 8-bit weights needs integer
    dot products (calib/int8.py): on this CPU without them (`here`: the graph runs on this machine) it is FP32."""
    files = manifest["vision"]["files"]
    if providers[0] == "TensorrtExecutionProvider":
        return files["fp32"]
    if providers[0] in GPU_PROVIDERS:
        return files.get("fp16", files["fp32"])
    if here and "int8" in files and not int8_runs_here(manifest):
        return files["fp32"]
    return files.get("int8", files["fp32"])


def int8_runs_here(manifest: dict[str, Any], cpu_facts: dict[str, Any] | None = None) -> bool:
    """False for a full-range INT8 graph on a CPU known to lack integer dot products (its U8S8 kernels' 16-bit
    intermediate would saturate); True otherwise (7-bit graphs run anywhere; an unknown CPU is given the benefit)."""
    if not manifest["vision"].get("int8", {}).get("needs_integer_dot_products"):
        return True
    from .cpu import int8_pays

    return int8_pays(cpu_facts)[0] is not False


def trt_cache_dir(manifest: dict[str, Any]) -> Path:
    """Where ONNX Runtime's TensorRT provider keeps the engines it builds for a bundle (one build per machine)."""
    import os

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "adafv" / "ort-trt" / manifest.get("build_key", "unkeyed")


def with_trt_options(providers: list[str], manifest: dict[str, Any]) -> list:
    """The TensorRT provider with its engine and timing caches on (else it rebuilds on every start)."""
    out: list = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            cache = trt_cache_dir(manifest)
            cache.mkdir(parents=True, exist_ok=True)
            options = {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache),
                "trt_fp16_enable": manifest["precision"] == "fp16",
            }
            out.append((p, options))
        else:
            out.append(p)
    return out


def decoder_providers(providers: list[str]) -> list[str]:
    """The int4 decoder's ops (MatMulNBits, GroupQueryAttention) are ONNX Runtime contrib ops: CUDA or CPU only."""
    return [p for p in providers if p != "TensorrtExecutionProvider"] or ["CPUExecutionProvider"]


def matching_plan(root: Path, manifest: dict[str, Any], required: bool) -> Path | None:
    """The bundle's TensorRT plan for this machine's TensorRT and GPU, or None (an error when required)."""
    engines = manifest["vision"].get("engines", [])
    if not engines:
        if required:
            raise BundleError(f"{root} has no TensorRT engine ({manifest['vision'].get('tensorrt', 'none built')})")
        return None
    from .trt import TensorRTUnavailable, compute_capability, tensorrt_version

    try:
        version, sm = tensorrt_version(), compute_capability()
    except TensorRTUnavailable as e:
        if required:
            raise BundleError(f"{root}: cannot run its TensorRT engine here: {e}") from e
        return None
    for engine in engines:
        if engine["tensorrt"] == version and engine["sm"] == sm:
            return root / engine["file"]
    if required:
        built = ", ".join(f"TensorRT {e['tensorrt']} for sm{e['sm']}" for e in engines)
        raise BundleError(
            f"{root} has engines built with {built}; this machine has TensorRT {version} on sm{sm}. TensorRT engines "
            "are not portable: rebuild here with `adafv engine ... --force`"
        )
    return None
