"""`adafv doctor`: what this environment can run, and for a bundle, what it would run on and why. Torch-free.

Reports the CPU (model, family, the instruction sets ONNX Runtime's kernels use, and whether INT8 vision pays on it),
the ONNX Runtime package(s) and version, the providers the build lists and those that really work (a GPU
answers, its libraries load), what `onnxruntime.preload_dlls()` said, the onnxruntime-genai flavour, TensorRT's
version and the GPU's compute capability where there are any, and for a bundle: its target, which vision engine and
which providers each session would use, and the one-line warning a mismatch gets.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

from .providers import GENAI_PACKAGES, ORT_PACKAGES, installed


def report(bundle: str | Path | None = None) -> dict[str, Any]:
    """Everything `adafv doctor` prints, as a JSON-ready dict."""
    from .cpu import cpu, describe, int8_pays
    from .errors import RuntimeFailure
    from .providers import PROBE_LOG, OnnxRuntimeMissing, ort, preload_cuda, probe, working_providers

    facts = cpu()
    pays, why = int8_pays(facts)
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "platform": sys.platform,
        "cpu": {**facts, "summary": describe(facts), "int8_pays": pays, "int8_why": why},
    }
    packages = installed(ORT_PACKAGES)
    ort_info: dict[str, Any] = {"packages": packages}
    if len(packages) > 1:
        ort_info["problem"] = (
            f"more than one ONNX Runtime package is installed ({', '.join(packages)}): they overwrite each other's "
            "files; uninstall all of them and install exactly one"
        )
    try:
        module = ort()
        ort_info["version"] = module.__version__
        ort_info["available_providers"] = module.get_available_providers()
        ort_info["gpu_build"] = "CUDAExecutionProvider" in ort_info["available_providers"]
        ort_info["preload_dlls"] = preload_cuda() or None
        ort_info["working_providers"] = working_providers()
        ort_info["gpu_answers"] = any(probe(p) for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
        ort_info["why_not"] = dict(PROBE_LOG) or None
    except OnnxRuntimeMissing as e:
        ort_info["problem"] = str(e)
    out["onnxruntime"] = ort_info
    out["onnxruntime_genai"] = installed(GENAI_PACKAGES) or None
    out["tensorrt"] = _tensorrt()
    if bundle is not None:
        try:
            out["bundle"] = _bundle(Path(bundle))
        except RuntimeFailure as e:
            out["bundle"] = {"path": str(bundle), "problem": str(e)}
    return out


def _tensorrt() -> dict[str, Any]:
    from .trt import TensorRTUnavailable, compute_capability, tensorrt_version

    info: dict[str, Any] = {}
    try:
        info["version"] = tensorrt_version()
    except TensorRTUnavailable as e:
        info["version"], info["why_not"] = None, str(e)
    try:
        info["gpu_compute_capability"] = compute_capability()
    except TensorRTUnavailable as e:
        info["gpu_compute_capability"] = None
        info.setdefault("why_not", str(e))
    return info


def _bundle(root: Path) -> dict[str, Any]:
    from . import manifest as bundle_format
    from .placement import decide

    m = bundle_format.read_manifest(root)
    p = decide(root, m)
    return {
        "path": str(root),
        "model": m["model"]["name"],
        "keep": m["selection"]["keep"],
        "precision": m["precision"],
        "target": m["target"],
        "built_for": m.get("providers"),
        "vision_engine": p.backend,
        "vision_engine_why": p.why,
        "vision_file": p.vision_file,
        "vision_providers": p.vision_providers,
        "decoder_providers": p.decoder_providers,
        "decoder_io": m["llm"].get("io"),
        "warning": p.warning,
    }


def format_report(r: dict[str, Any]) -> str:
    """The report as aligned lines for a terminal."""
    o = r["onnxruntime"]
    lines = [f"python        {r['python']} ({r['platform']}, {r['machine']})"]
    c = r["cpu"]
    lines.append(f"cpu           {c['summary']}")
    verdict = {True: "pays", False: "does not pay", None: "unknown"}[c["int8_pays"]]
    lines.append(f"  INT8        {verdict}: {c['int8_why']}")
    pkgs = ", ".join(f"{k} {v}" for k, v in o["packages"].items()) or "none installed"
    lines.append(f"onnxruntime   {pkgs}" + (" (GPU build)" if o.get("gpu_build") else ""))
    if "available_providers" in o:
        lines.append(f"  providers   listed: {', '.join(o['available_providers'])}")
        lines.append(f"              working here: {', '.join(o['working_providers'])}")
        lines.append(f"  GPU         {'answers' if o['gpu_answers'] else 'none answers (CPU provider only)'}")
    for provider, why in (o.get("why_not") or {}).items():
        lines.append(f"  not {provider.replace('ExecutionProvider', '')}: {why}")
    if o.get("problem"):
        lines.append(f"  PROBLEM     {o['problem']}")
    genai = r["onnxruntime_genai"]
    lines.append(f"genai         {', '.join(f'{k} {v}' for k, v in genai.items()) if genai else 'not installed'}")
    t = r["tensorrt"]
    why = f" ({t['why_not']})" if t.get("why_not") else ""
    lines.append(f"tensorrt      {t['version'] or 'not available'}{why}")
    lines.append(f"GPU sm        {t['gpu_compute_capability'] or 'none found'}")
    b = r.get("bundle")
    if b:
        lines.append(f"bundle        {b['path']}")
        if b.get("problem"):
            lines.append(f"  PROBLEM     {b['problem']}")
        else:
            lines.append(f"  built       {b['model']}, keep {b['keep']}, {b['precision']} vision, target {b['target']}")
            lines.append(f"  vision      {b['vision_engine']} ({b['vision_engine_why']}): {b['vision_file']}")
            lines.append(f"              on {', '.join(b['vision_providers'])}")
            io = b.get("decoder_io") or {}
            dtype = io.get("inputs_embeds")
            lines.append(f"  decoder     on {', '.join(b['decoder_providers'])}; inputs_embeds {dtype}")
            if b.get("warning"):
                lines.append(f"  WARNING     {b['warning']}")
    return "\n".join(lines)
