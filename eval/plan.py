"""`adafv plan`: will a bundle fit a device, and roughly how fast will it answer? An estimate before the box arrives.

    adafv plan --device orin-nano-8gb|orin-nx-16gb|agx-orin-32gb|agx-orin-64gb|thor|rtx-4090|l4|h100|cpu-24gb BUNDLE
               [--context N] [--crops N] [--json]

Memory, in the process that answers (on a Jetson, CPU and GPU share the DRAM, so it all counts against one budget):

    runtime      85 MB: Python, numpy, ONNX Runtime, PIL, tokenizers (measured: a fresh process on the tiny bundle)
    weights      the bundle's vision graph the device runs (int8 on CPUs, fp16 on GPUs) + the int4 decoder, as files
    activations  4.27 x (attention maps + MLP hidden state) of one tower layer per crop, in the graph's precision
    KV cache     2 x layers x KV heads x head size x context x bytes (fp16 on GPUs, fp32 on CPUs)
    GPU          the CUDA context (~0.5 GB) and, with TensorRT, its workspace (1 GB by default)
    Jetson       the OS and its services (~1.5 GB of the unified memory on JetPack 6)

The activation factor (4.27) was fitted on one measured CPU run (the fp32 llava-next-1b bench bundle, 2,579 MB peak
RSS) and checked on two others: the int8 one (1,676 MB measured, 1,716 estimated, +2.4%) and the tiny bundle (85 MB
measured, 88 estimated). GPU-side figures (context, workspace, OS share) are the usual published sizes, not measured.

Latency, rough, GPUs only: decoding is memory-bound (one token reads the decoder's weights and its KV cache), prefill
and the vision tower compute-bound; each at the fraction of the device's datasheet peak (memory bandwidth, dense INT8
throughput) that the one H100 run we have reached (see DECODE_BANDWIDTH etc.). The other devices are scaled from
that run by their datasheets: estimates, not measurements. For CPUs, `adafv bench` measures instead.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

RUNTIME_MB = 85.0
ACTIVATION_FACTOR = 4.27
CUDA_CONTEXT_MB = 500.0
TRT_WORKSPACE_MB = 1024.0
JETSON_OS_MB = 1536.0
# Efficiencies fitted on the one GPU run we have (an H100, LLaVA-NeXT-7B shapes, README "GPUs"): decode 4.75 ms per
# token for the int4 7B decoder (25% of 3.35 TB/s), prefill of 104 tokens in 24 ms (3.1% of 1979 dense INT8 TOPS),
# CLIP-L on 5 crops in 8.5 ms in fp16 (11%). Small batches keep GPUs far from their peaks.
DECODE_BANDWIDTH = 0.25
PREFILL_COMPUTE = 0.031
VISION_COMPUTE = 0.11


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    memory_gb: float
    bandwidth_gbs: float
    dense_tops: float  # INT8 dense (GPUs/Jetson: the tensor cores'); no datasheet figure for CPUs
    jetson: bool = False
    gpu: bool = True
    note: str = ""


DEVICES = {d.name: d for d in [
    Device("orin-nano-8gb", 8, 68, 20, jetson=True, note="Jetson Orin Nano 8GB: 68 GB/s, 40 sparse INT8 TOPS"),
    Device("orin-nx-16gb", 16, 102.4, 50, jetson=True, note="Jetson Orin NX 16GB: 102.4 GB/s, 100 sparse INT8 TOPS"),
    Device("agx-orin-32gb", 32, 204.8, 100, jetson=True, note="Jetson AGX Orin 32GB: 204.8 GB/s, 200 sparse TOPS"),
    Device("agx-orin-64gb", 64, 204.8, 137.5, jetson=True, note="Jetson AGX Orin 64GB: 204.8 GB/s, 275 sparse TOPS"),
    Device("thor", 128, 273, 517, jetson=True, note="Jetson AGX Thor: 273 GB/s, 1035 sparse FP8 TFLOPS"),
    Device("rtx-4090", 24, 1008, 660, note="GeForce RTX 4090: 1008 GB/s, 1321 sparse INT8 TOPS"),
    Device("l4", 24, 300, 242, note="NVIDIA L4: 300 GB/s, 485 sparse INT8 TOPS"),
    Device("h100", 80, 3350, 1979, note="H100 SXM: 3.35 TB/s, 3958 sparse INT8 TOPS"),
    Device("cpu-24gb", 24, 0, 0, gpu=False, note="a 24 GB CPU machine like this project's (memory only)"),
]}  # fmt: skip


def _size(root: Path, name: str) -> float:
    return sum(p.stat().st_size for p in root.glob(name + "*") if p.is_file()) / 1e6


def plan(bundle: str | Path, device: str, context: int | None = None, crops: int | None = None) -> dict[str, Any]:
    from adafv.runtime import manifest as bundle_format
    from adafv.runtime.placement import graph_for

    if device not in DEVICES:
        from adafv.errors import ConfigError

        raise ConfigError(f"unknown device {device!r}; choose {', '.join(DEVICES)}")
    d = DEVICES[device]
    root = Path(bundle)
    m = bundle_format.read_manifest(root)
    vision_file = graph_for(m, d.gpu)
    llm = m["llm"]
    lo, hi = m["vision"]["crops"]
    if crops is not None and not lo <= crops <= hi:
        from adafv.errors import ConfigError

        raise ConfigError(f"--crops {crops}: this bundle's vision graph takes {lo}..{hi} crops per image")
    if context is not None and context > llm["max_length"]:
        from adafv.errors import ConfigError

        raise ConfigError(f"--context {context}: this bundle's LLM holds at most {llm['max_length']} tokens")
    crops = crops or hi
    context = context or (len(m["prompt"]["before"]) // 4 + m["selection"]["keep"] + 64 + 256)
    width, heads, mlp, layers = _tower(m)
    act_bytes = 2 if d.gpu else 4
    if "merged_grid" in m["vision"]:  # Qwen: 4 patches per merged token, no [CLS]; attention in query blocks
        from adafv.archs.qwen import QUERY_BLOCK_ELEMENTS

        tokens = 4 * m["vision"]["patches_per_crop"]
        attention = min(heads * tokens * tokens, QUERY_BLOCK_ELEMENTS) * 4  # the float32 saliency block dominates
    else:
        side = int(round(m["vision"]["patches_per_crop"] ** 0.5))
        tokens = side * side + 1  # per crop, with [CLS]
        attention = heads * tokens * tokens * act_bytes
    hidden = tokens * mlp * act_bytes
    kv_bytes = 2 if d.gpu else 4
    kv_per_token = 2 * llm["num_layers"] * llm["num_kv_heads"] * llm["head_size"] * kv_bytes
    parts = {
        "runtime": RUNTIME_MB,
        "vision weights": _size(root, vision_file),
        "decoder weights": _size(root / llm["dir"], llm["file"]),
        "activations": ACTIVATION_FACTOR * crops * (attention + hidden) / 1e6,
        "KV cache": kv_per_token * context / 1e6,
    }
    if d.gpu:
        parts["CUDA context"] = CUDA_CONTEXT_MB
    if d.jetson:
        parts["TensorRT workspace"] = TRT_WORKSPACE_MB
        parts["OS share (JetPack)"] = JETSON_OS_MB
    total = sum(parts.values())
    budget = d.memory_gb * 1000
    spare = budget - total
    max_context = context + int(spare * 1e6 / kv_per_token) if spare > 0 else None
    return {
        "device": dataclasses.asdict(d),
        "bundle": str(root),
        "vision_graph": vision_file,
        "crops": crops,
        "context": context,
        "memory_mb": {k: round(v, 1) for k, v in parts.items()},
        "total_mb": round(total, 1),
        "fits": spare > 0,
        "spare_mb": round(spare, 1),
        "largest_context": min(max_context, llm["max_length"]) if max_context else None,
        "latency_ms": _latency(d, parts, m, crops, tokens, width, mlp, layers, kv_per_token, context)
        if d.gpu
        else None,
        "warning": None
        if (m["target"] == "cuda") == d.gpu
        else (
            f"this bundle was built for target {m['target']}; for this device build with --target "
            f"{'cuda --precision fp16' if d.gpu else 'cpu --precision int8'} (weights above: this bundle's files)"
        ),
    }


def _tower(m: dict) -> tuple[int, int, int, int]:
    """(width, heads, MLP width, layers) of the bundle's vision tower, as the build recorded them."""
    from adafv.runtime.errors import BundleError

    t = m["vision"].get("tower")
    if not isinstance(t, dict):
        raise BundleError("this bundle does not record its tower's shape (built by an older adafv): rebuild it")
    return t["width"], t["heads"], t["mlp"], t["layers"]


def _latency(d: Device, parts, m, crops, tokens, width, mlp, layers, kv_per_token, context) -> dict[str, float]:
    peak = d.dense_tops * 1e12
    vision_flops = crops * layers * (2 * tokens * (4 * width * width + 2 * width * mlp) + 4 * tokens * tokens * width)
    prompt = m["selection"]["keep"] + 64
    decoder_bytes = parts["decoder weights"] * 1e6
    prefill_flops = 2 * decoder_bytes * 2 * prompt  # int4: 2 parameters per byte, 2 FLOPs per parameter and token
    vision = vision_flops / (peak * VISION_COMPUTE) * 1000
    prefill = prefill_flops / (peak * PREFILL_COMPUTE) * 1000
    decode = (decoder_bytes + kv_per_token * context) / (d.bandwidth_gbs * 1e9 * DECODE_BANDWIDTH) * 1000
    return {
        "vision": round(vision, 1),
        "prefill": round(prefill, 1),
        "decode_per_token": round(decode, 2),
        "time_to_first_token": round(vision + prefill, 1),
        "tower_layers": layers,
        "llm_layers": m["llm"]["num_layers"],
    }


def text(r: dict[str, Any]) -> str:
    d = r["device"]
    lines = [f"{d['name']} ({d['note']}), {d['memory_gb']:.0f} GB; {Path(r['bundle']).name}: {r['vision_graph']}, "
             f"{r['crops']} crops, context {r['context']}"]  # fmt: skip
    for k, v in r["memory_mb"].items():
        lines.append(f"  {k:20s} {v:10.1f} MB")
    verdict = "fits" if r["fits"] else "DOES NOT FIT"
    lines.append(f"  {'total':20s} {r['total_mb']:10.1f} MB  -> {verdict} ({r['spare_mb']:.0f} MB spare)")
    if r["largest_context"]:
        lines.append(f"  largest context that fits: {r['largest_context']} tokens")
    t = r["latency_ms"]
    if t is None:
        lines.append("  latency: measure it on this machine with `adafv bench` (no datasheet estimate for CPUs)")
    else:
        lines.append(
            f"  rough latency: vision {t['vision']:.0f} ms, prefill {t['prefill']:.0f} ms, first token "
            f"{t['time_to_first_token']:.0f} ms, decode {t['decode_per_token']:.1f} ms/token (estimates)"
        )
    if r.get("warning"):
        lines.append(f"  note: {r['warning']}")
    return "\n".join(lines)


def main_json(r: dict[str, Any]) -> str:
    return json.dumps(r, indent=2)
