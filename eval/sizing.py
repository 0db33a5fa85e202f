"""What a bench run will make and hold, before it runs (`adafv bench --dry-run`): each stage in order, whether its
artifact is cached, and the sizes that decide whether it fits a machine or a GPU host's short window: parameters
counted exactly from the configs (the model built on PyTorch's meta device: no memory, no weights), the bytes of
each artifact at the precision it is stored in, and the memory each side holds while it is measured.

Bytes are estimates from parameter counts: the int4 decoder's is an upper bound (4-bit linear weights with a
16-bit scale per block of 32, the LM head and the embedding table in 16 bits); graph files add a few MB of
structure. Nothing is built, downloaded or timed.
"""

from __future__ import annotations

from typing import Any

GB = 1e9
VISION_PARTS = ("vision_tower", "visual", "multi_modal_projector", "image_newline")


def parameters(shapes: str) -> dict[str, int]:
    """Exact parameter counts of `shapes`' model by part: vision (tower + projector), llm (decoder layers and norms),
    embed (the input embedding table), lm_head."""
    import torch

    from .shapes import _build

    with torch.device("meta"):
        model, _ = _build(shapes, 0)
    out = {"vision": 0, "llm": 0, "embed": 0, "lm_head": 0}
    for name, p in model.named_parameters():
        parts = name.split(".")
        if any(v in parts for v in VISION_PARTS):
            out["vision"] += p.numel()
        elif "embed_tokens" in parts:
            out["embed"] += p.numel()
        elif parts[0] == "lm_head":
            out["lm_head"] += p.numel()
        else:
            out["llm"] += p.numel()
    return out


def plan(config) -> dict[str, Any]:
    """The stages of `adafv bench` for a BenchConfig, with sizes; nothing is built."""
    from .bench import KEEPS
    from .shapes import cache_dir

    if config.shapes in ("tiny", "tiny-qwen"):
        from adafv.errors import ConfigError

        raise ConfigError("--dry-run sizes real shapes; the tiny twins are registered models (seconds to build)")
    n = parameters(config.shapes)
    gpu = config.device == "cuda"
    weight = 2 if gpu else 4  # the checkpoint: float16 made on the GPU, float32 on the CPU
    vision_bytes = {"fp32": 4 * n["vision"], "fp16": 2 * n["vision"], "int8": n["vision"]}
    if config.precision or gpu:
        precision = config.precision or "fp16"
    else:  # as the bench decides: INT8 only where this CPU has integer dot products
        from adafv.runtime.cpu import int8_pays

        precision = "int8" if int8_pays()[0] else "fp32"
    int4 = n["llm"] * (0.5 + 2 / 32) + 2 * n["lm_head"]  # upper bound: MatMulNBits + a 16-bit scale per 32
    embed = 2 * n["embed"]
    folder = cache_dir() / (f"{config.shapes}-seed0" + ("-cuda-fp16" if gpu else ""))
    graphs = vision_bytes["fp32"] + (vision_bytes[precision] if precision != "fp32" else 0)
    held = "float16 on the GPU" if gpu else "float32"
    stages = [
        {"stage": "random-weight checkpoint", "makes": f"{folder}", "cached": folder.is_dir(),
         "bytes": weight * sum(n.values()), "note": "made on the GPU in float16" if gpu else "float32 on the CPU"},
        {"stage": "export the vision graph (fp32) and check it", "bytes": vision_bytes["fp32"],
         "note": "lint, polygraphy, 2 parity probes"},
        {"stage": f"int4 decoder ({'-e cuda' if gpu else '-e cpu'}) and its check", "bytes": int4 + embed,
         "note": "onnxruntime-genai's builder; embed.npy beside it"},
        *([{"stage": f"the {precision} vision graph and its report", "bytes": graphs - vision_bytes["fp32"],
            "note": "the report within 15% of the build's time"
                    + ("; more with its FP32 islands (selection, projector)" if precision == "int8" else "")}]
          if precision != "fp32" else []),
        {"stage": "measure: preprocessing, vision (+ profile), prefill at keeps "
                  f"{'/'.join(map(str, config.keeps or KEEPS[config.shapes]))} and all tokens, end to end, decode"
                  if not config.headline else "measure: end to end at the smallest keep, decode, profile"},
        {"stage": "transformers with every token",
         "note": f"holds the model in {held}: {weight * sum(n.values()) / GB:.1f} GB"},
    ]  # fmt: skip
    disk = weight * sum(n.values()) + graphs + int4 + embed
    return {"shapes": config.shapes, "device": config.device, "parameters": n, "total_parameters": sum(n.values()),
            "stages": stages, "disk_bytes": disk, "vision_precision": precision}  # fmt: skip


def markdown(p: dict[str, Any]) -> str:
    """The plan as the CLI prints it."""
    n = p["parameters"]
    lines = [
        f"# adafv bench --dry-run: {p['shapes']} on {p['device']}",
        "",
        f"Parameters (exact, from the configs): {p['total_parameters'] / 1e9:.2f} B: vision {n['vision'] / 1e6:.0f} M, "
        f"LLM layers {n['llm'] / 1e6:.0f} M, embedding table {n['embed'] / 1e6:.0f} M, LM head "
        f"{n['lm_head'] / 1e6:.0f} M. Disk for the checkpoint and the bundle: about {p['disk_bytes'] / GB:.1f} GB "
        "(estimate).",
        "",
        "| stage | size (estimate) | cached | note |",
        "|---|---|---|---|",
    ]
    for s in p["stages"]:
        size = f"{s['bytes'] / GB:.2f} GB" if s.get("bytes") else ""
        cached = {True: "yes", False: "no"}.get(s.get("cached"), "")
        lines.append(f"| {s['stage']} | {size} | {cached} | {s.get('note', '')} |")
    return "\n".join(lines) + "\n"
