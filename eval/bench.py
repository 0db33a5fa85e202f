"""`adafv bench`: where the time goes, at real shapes, measured side by side in one run (medians of repeats).

    adafv bench [--shapes tiny|llava-next-1b|llava-next-7b] [--device cpu|cuda] [--quick] [--repeats N] [--out DIR]

Random weights at real shapes (`adafv.eval.shapes`: CLIP-L/14-336 with LLaVA-NeXT's 5 crops = 2,880 visual tokens,
and a ~1B or a Mistral-7B-shaped LLM), built from configs and cached; the bundle is built (and cached) by
`adafv engine`'s own code. Measured, on the same inputs and device:

* preprocessing at 672x672, 1280x720 and 1920x1080: transformers' PIL processor vs the runtime's (whose uint8 pixels,
  normalised by the graph's table, must equal the processor's values: checked here too);
* vision + selection: the bundle's graph vs the same graph without the selection (tower + projector only), and the
  peers' way (PyTorch eager attention with `output_attentions=True` in every layer, selection in Python);
* LLM prefill at every keep and at all visual tokens, as a ratio to all, beside the ratio the FLOP count predicts;
* time to first token: measured end to end at the bundle's keep; at the other keeps, the sum of the measured stages;
  transformers' `LlavaNextForConditionalGeneration` with all tokens (fp32 on CPU, fp16 sdpa on CUDA) beside it;
* decode ms per token, host bytes per decode step, KV-cache bytes, peak RSS of a fresh process that loads the bundle
  and answers (and of one that runs transformers), peak GPU memory of transformers on CUDA.

Writes bench.json (machine, versions, every sample), bench.md (the tables) and bench.png (time to first token vs keep,
stacked by stage, with the transformers line; needs matplotlib). Speed claims in the README come from this command.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .overhead import tower_session
from .timing import machine
from .timing import median as _median
from .timing import times as _times

PROMPT = "What is in the picture?"
SIZES = [(672, 672), (1280, 720), (1920, 1080)]  # (width, height) of the preprocessing inputs
CAMERA_FRAMES = [(640, 480), (1280, 720), (1920, 1080)]  # a Qwen bundle's camera row: the first of its aspect
CHECKS = ("lint", "polygraphy", "prepare parity", "parity", "verify", "report")  # build steps that prove, not make
KEEPS = {"tiny": (16, 64, 144), "llava-next-1b": (64, 144, 288, 720), "llava-next-7b": (64, 144, 288, 720),
         "tiny-qwen": (16, 32, 64), "qwen2.5-vl-0.5b": (64, 128, 256), "qwen2.5-vl-3b": (64, 128, 256),
         "qwen2.5-vl-7b": (64, 128, 256)}  # fmt: skip
QWEN_RESOLUTION = {"tiny-qwen": (224, 308)}  # (height, width); other Qwen shapes: the processor's VGA size, 644x476


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmark run; validated, written into bench.json."""

    shapes: str = "llava-next-1b"
    device: str = "cpu"
    repeats: int = 3
    quick: bool = False
    keeps: tuple[int, ...] = ()  # default: KEEPS[shapes]
    heavy_repeats: int = 1  # transformers and the peers' eager path: slow at real shapes on a CPU
    resolution: tuple[int, int] | None = None  # (height, width) of a Qwen bundle; default QWEN_RESOLUTION / VGA
    precision: str | None = None  # the vision graph's; default the device's best (fp16 GPU, int8 where it pays)
    headline: bool = False  # only time to first token end to end at the smallest keep, decode, and transformers

    def __post_init__(self):
        from adafv.errors import ConfigError

        from .shapes import SHAPES

        if self.quick:
            object.__setattr__(self, "shapes", "tiny")
            object.__setattr__(self, "repeats", 1)
        if self.shapes not in SHAPES:
            raise ConfigError(f"unknown shapes {self.shapes!r}; choose {', '.join(SHAPES)}")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; choose cpu or cuda")
        if self.repeats < 1 or self.heavy_repeats < 1:
            raise ConfigError("repeats must be >= 1")
        if not self.keeps:
            object.__setattr__(self, "keeps", KEEPS[self.shapes])
        if self.precision not in (None, "fp32", "fp16", "int8"):
            raise ConfigError(f"unknown vision precision {self.precision!r}; choose fp32, fp16 or int8")
        if self.resolution is not None and "qwen" not in self.shapes:
            raise ConfigError(f"--resolution is for Qwen shapes (a fixed-resolution bundle), not {self.shapes}")


def prefill_flops(config, length: int) -> float:
    """Forward FLOPs of a prefill of `length` tokens: 2 x weights x tokens for the matmuls, plus causal attention
    (QK^T and AV: 2 x 2 x L^2/2 x width per layer); the LM head on the last position only (prune_lm_head)."""
    t = config.text_config
    d, layers, mlp = t.hidden_size, t.num_hidden_layers, t.intermediate_size
    heads, kv = t.num_attention_heads, t.num_key_value_heads
    head = getattr(t, "head_dim", None) or d // heads
    per_layer = d * heads * head + 2 * d * kv * head + heads * head * d + 3 * d * mlp
    matmuls = 2 * per_layer * layers * length
    attention = 2 * 2 * (length * length / 2) * heads * head * layers
    return matmuls + attention + 2 * d * t.vocab_size


def run(config: BenchConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Measure, and write bench.json / bench.md / bench.png into `out_dir`. Should a stage fail (or the run be
    stopped), bench.json still gets what was measured before it, with the error, and the error propagates."""
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"config": dataclasses.asdict(config), "machine": machine(), "samples_ms": {}}
    started = time.perf_counter()
    try:
        _measure(config, out_dir, report, say, progress)
    except BaseException as e:  # a later stage failed, or the window closed: keep what was measured
        report["error"] = f"{type(e).__name__}: {e}".strip()
        report["seconds"] = round(time.perf_counter() - started, 1)
        (out_dir / "bench.json").write_text(json.dumps(report, indent=2, default=str))
        say(f"stopped: {report['error']}; what was measured is in {out_dir / 'bench.json'}")
        raise
    report["seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2))
    (out_dir / "bench.md").write_text(markdown(report))
    report["png"] = plot(report, out_dir / "bench.png") if not config.headline else "not drawn: --headline"
    return report


def _measure(config: BenchConfig, out_dir: Path, report: dict[str, Any], say, progress: bool) -> None:
    """The stages, filling `report` as each ends (so that a failure leaves the earlier ones in it)."""
    import torch

    from adafv import AdaFVConfig
    from adafv.export.bundle import EngineConfig, build, build_key
    from adafv.models import load, resolve
    from adafv.runtime import Pipeline, load_image
    from adafv.runtime.llm import Sampler

    from .shapes import cache_dir, checkpoint

    samples = report["samples_ms"]
    model = checkpoint(config.shapes, device=config.device)  # on a GPU: made there, in float16
    say(f"model: {config.shapes} ({model})")
    keep = min(config.keeps)
    target = config.device
    from adafv.runtime.cpu import int8_pays

    pays, why = int8_pays(report["machine"]["cpu_facts"])
    # the graph each device runs best (fp32 is measured beside it): fp16 on a GPU; on a CPU int8 only where integer
    # dot products make it pay; elsewhere its build (calibration, report) would cost minutes for nothing
    precision = config.precision or ("fp16" if config.device == "cuda" else "int8" if pays else "fp32")
    report["precision"] = {"vision": precision, "int8_pays_here": pays, "why": why,
                           "chosen_by": "--precision" if config.precision else "the device"}  # fmt: skip
    say(f"vision graph: {precision}" + (" (--precision)" if config.precision else
                                        "" if config.device == "cuda" else f" ({why})"))  # fmt: skip
    qwen = config.shapes.startswith(("qwen", "tiny-qwen"))
    resolution = (config.resolution or QWEN_RESOLUTION.get(config.shapes)) if qwen else None
    engine = EngineConfig(model, AdaFVConfig(keep=keep), precision=precision, target=target, max_probes=2,
                          resolution=resolution)  # fmt: skip
    size = f"-{resolution[1]}x{resolution[0]}" if resolution else ""
    name = f"{config.shapes}{size}-k{keep}-{precision}-{target}"
    bundle_dir = cache_dir() / "bundles" / f"{name}-{build_key(engine, resolve(model))}"
    for stale in bundle_dir.parent.glob(f"{name}-*"):  # built by another adafv or other settings: gigabytes each
        if stale != bundle_dir:
            shutil.rmtree(stale, ignore_errors=True)
    say(f"bundle: {bundle_dir} (built once, then reused)")
    built = build(engine, out=bundle_dir, progress=progress)
    bundle = built.path
    steps = built.manifest.get("timings_s", {})
    total = sum(steps.values())
    proving = sum(v for k, v in steps.items() if k.startswith(CHECKS))
    report["build"] = {"steps_s": steps, "seconds": round(total, 1), "reused": built.reused,
                       "report_s": sum(v for k, v in steps.items() if k.startswith("report")),
                       "checks_share": round(proving / total, 3) if total else None}  # fmt: skip
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if config.device == "cuda" else None
    pipe = Pipeline.load(bundle, providers=providers, warmup=True)
    report["bundle"] = {"path": str(bundle), "warmup_ms": pipe.warmup_ms, "providers": pipe.session_providers}
    loaded = load(model)
    hf_processor = loaded.processor

    # -- preprocessing --------------------------------------------------------------------------------------------
    from PIL import Image

    from adafv.errors import ImageError
    from adafv.runtime.preprocess import check_aspect, crop_to_aspect, normalize, patchify, preprocess

    spec = pipe.manifest["preprocess"]
    rng = np.random.default_rng(0)
    rows = []
    if config.headline:
        sizes = []
    elif qwen:  # a fixed-resolution bundle: its own size, a camera frame, and twice the size, all of its aspect
        height, width = spec["resolution"]["height"], spec["resolution"]["width"]

        def fits(size: tuple[int, int]) -> bool:
            try:
                check_aspect(size, spec)
            except ImageError:
                return False
            return True

        camera = [s for s in CAMERA_FRAMES if fits(s)][:1]  # VGA for 644x476, 720p for 1288x728
        sizes = [(width, height), *camera, (2 * width, 2 * height)]
    else:
        sizes = SIZES
    for w, h in sizes:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        hf = hf_processor.image_processor
        expected = hf(image, return_tensors="np")["pixel_values"]
        expected = expected if qwen else expected[0]
        ours = normalize(preprocess(image, spec)[0], spec)
        ours = patchify(ours, spec) if qwen else ours
        identical = bool(ours.shape == expected.shape and np.array_equal(ours, expected))
        if qwen and ours.shape != expected.shape:
            identical = None  # the processor picks another size for it (the bundle's resolution is fixed)
        a = _times(lambda: hf(image, return_tensors="np"), config.repeats)  # noqa: B023
        b = _times(lambda: preprocess(image, spec), config.repeats)  # noqa: B023
        samples[f"preprocess {w}x{h} hf"], samples[f"preprocess {w}x{h} adafv"] = a, b
        rows.append((f"{w}x{h}", _median(a), _median(b), identical))
    report["preprocess"] = [dict(zip(("size", "hf_ms", "adafv_ms", "identical_pixels"), r)) for r in rows]
    say("preprocessing measured" if rows else "preprocessing: not measured (--headline)")

    # -- vision + selection -----------------------------------------------------------------------------------------
    photo = crop_to_aspect(load_image(_photo()), spec)  # a Qwen bundle takes its own aspect
    photo_file = out_dir / "photo.png"
    photo.save(photo_file)
    pre, post = pipe.prompt_ids(PROMPT)
    pixels, grid = preprocess(photo, spec)
    text = pipe.embed(post)
    num_visual = pixels.shape[0] * pipe.manifest["vision"]["patches_per_crop"]
    vision = _times(lambda: pipe.vision(pixels, text, grid), config.repeats)  # the graph the runtime chose
    chosen = pipe.placement.vision_file
    import onnxruntime as ort

    feeds = pipe.vision_feeds(pixels, text, grid)
    if pipe.placement.backend == "onnxruntime":  # where the chosen graph's time goes, kernel by kernel
        from . import profile

        report["profile"] = profile.profile(bundle / chosen, feeds, providers)
        say(f"profiled {chosen}: {report['profile']['run_ms']:.0f} ms, "
            f"{report['profile']['ops'][0]['op'] if report['profile']['ops'] else '-'} first")  # fmt: skip
    if config.headline:
        _end_to_end(config, report, pipe, photo, bundle, photo_file, keep, say)
        at_size = Image.fromarray(pixels[0].transpose(1, 2, 0)) if qwen else photo
        pipe = None
        gc.collect()
        report["transformers"] = _transformers(loaded, at_size, config, samples)
        say(f"transformers: {report['transformers']['ttft_ms']:.0f} ms to the first token")
        return
    fp32 = ort.InferenceSession(str(bundle / pipe.manifest["vision"]["files"]["fp32"]),
                                providers=providers or ["CPUExecutionProvider"])  # fmt: skip
    vision32 = _times(lambda: fp32.run(None, feeds), config.repeats)
    tower = tower_session(loaded, spec, cache_dir() / "towers" / f"{config.shapes}{size}", providers)
    without = _times(lambda: tower.run(None, {"pixel_values": pixels}), config.repeats)
    samples.update({f"vision {chosen}": vision, "vision fp32 graph": vision32, "vision graph without selection":
                    without})  # fmt: skip
    if qwen:  # no [CLS] to read: the peers' Qwen code recomputes attention maps; not reproduced here
        peers = [float("nan")]
    else:
        peers = _times(lambda: _peers_selection(loaded, photo, keep), config.heavy_repeats)
        samples["vision peers eager attentions"] = peers
    report["vision"] = {
        "crops": int(pixels.shape[0]),
        "visual_tokens": num_visual,
        "graph": chosen,
        "adafv_graph_ms": _median(vision),
        "fp32_graph_ms": _median(vision32),
        "without_selection_ms": _median(without),
        "selection_overhead_ms": _median(vision32) - _median(without),
        "peers_eager_attentions_ms": _median(peers),
    }
    if "calibration" in pipe.manifest:
        report["vision"]["calibration"] = pipe.manifest["calibration"]["mean"]
    fp32 = tower = feeds = None  # two more sessions of the tower, each with its arena: gigabytes at 720p (OOM at 24 GB)
    gc.collect()
    if qwen:  # the whole graphs' difference is below this machine's noise: the parts that differ, timed alone
        from . import overhead

        at = (spec["resolution"]["height"], spec["resolution"]["width"])
        parts = overhead.graphs(loaded, at, engine.selection, text.shape[0],
                                cache_dir() / "towers" / f"{config.shapes}{size}-parts-k{keep}")  # fmt: skip
        rounds = overhead.measure(parts, max(overhead.ROUNDS, config.repeats), providers)
        samples.update({f"selection part {name}": times for name, times in rounds.items()})
        report["vision"]["selection_isolated"] = overhead.summary(rounds, report["vision"]["without_selection_ms"])
        parts = rounds = None
        gc.collect()
    say("vision measured")

    # -- prefill at every keep, and at all tokens ------------------------------------------------------------------
    decoder = pipe.decoder
    dim = pipe.manifest["vision"]["hidden_size"]
    eos: set[int] = set()
    prefill = {}
    for k in (*config.keeps, num_visual):
        embeds = np.concatenate([pipe.embed(pre), rng.standard_normal((k, dim)).astype(np.float32) * 0.02,
                                 pipe.embed(post)])  # fmt: skip
        times = []
        for _ in range(config.repeats + 1):
            times.append(decoder.generate(embeds, pipe.embed_table, eos, 1, Sampler()).prefill_ms)
        samples[f"prefill {k}"] = times[1:]
        prefill[k] = {"tokens": int(embeds.shape[0]), "ms": _median(times[1:])}
        say(f"prefill with {k} visual tokens: {prefill[k]['ms']:.0f} ms")
    full = prefill[num_visual]
    flops_full = prefill_flops(loaded.config, full["tokens"])
    for row in prefill.values():
        row["ratio_to_all"] = row["ms"] / full["ms"]
        row["flop_ratio"] = prefill_flops(loaded.config, row["tokens"]) / flops_full
    report["prefill"] = {str(k): v for k, v in prefill.items()}

    # -- end to end at the bundle's keep, decode, bytes -------------------------------------------------------------
    _end_to_end(config, report, pipe, photo, bundle, photo_file, keep, say)
    stacked = {}
    for k in (*config.keeps, num_visual):
        vision_ms = report["vision"]["adafv_graph_ms"] if k < num_visual else report["vision"]["without_selection_ms"]
        stacked[str(k)] = {"preprocess": report["adafv"]["preprocess_ms"], "vision": vision_ms,
                           "prefill": prefill[k]["ms"]}  # fmt: skip
        stacked[str(k)]["total"] = sum(stacked[str(k)].values())
    report["ttft_by_keep"] = stacked

    # -- transformers with all tokens --------------------------------------------------------------------------------
    # a Qwen bundle's resolution is fixed: transformers gets the photo at that size (its processor keeps it)
    at_size = Image.fromarray(pixels[0].transpose(1, 2, 0)) if qwen else photo
    pipe = decoder = None  # the bundle's sessions: PyTorch's model runs alone
    gc.collect()
    report["transformers"] = _transformers(loaded, at_size, config, samples)
    say(f"transformers: {report['transformers']['ttft_ms']:.0f} ms to the first token")
    del torch


def _end_to_end(config: BenchConfig, report: dict[str, Any], pipe, photo, bundle: Path, photo_file: Path, keep: int,
                say) -> None:  # fmt: skip
    """The bundle answering the photo at its keep, `repeats` times after the load's warm-up: time to first token
    (the first request apart from the median), decode per token, bytes, KV cache, a fresh process's peak RSS."""
    samples = report["samples_ms"]
    runs = [pipe.run(photo, PROMPT, max_new_tokens=16) for _ in range(config.repeats)]
    samples["ttft adafv"] = [r["timings_ms"]["time_to_first_token"] for r in runs]
    decode = [r["timings_ms"]["decode"] / max(len(r["tokens"]) - 1, 1) for r in runs if len(r["tokens"]) > 1]
    samples["decode per token"] = decode
    last = runs[-1]
    first, median = samples["ttft adafv"][0], _median(samples["ttft adafv"])
    report["adafv"] = {
        "keep": keep,
        "ttft_ms": median,
        "first_request_ttft_ms": first,
        "first_request_vs_median": first / median if median else None,
        "preprocess_ms": _median([r["timings_ms"]["preprocess"] for r in runs]),
        "decode_ms_per_token": _median(decode) if decode else None,
        "host_bytes_per_decode_step": last["host_bytes_per_decode_step"],
        "kv_cache_bytes": last["kv_cache_bytes"],
        "providers": last["providers"],
        "peak_rss_mb": _fresh_rss(bundle, photo_file),
    }
    gpu = _gpu_memory_mb()
    if gpu is not None:
        report["adafv"]["gpu_memory_used_mb"] = gpu
    say(f"end to end: {median:.0f} ms to the first token (first request {first:.0f} ms)")


def _gpu_memory_mb() -> float | None:
    """GPU memory in use now (this process's sessions are alive), from nvidia-smi; None without a GPU."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
        return float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _photo() -> Path:
    from adafv.assets import path

    return path("rocket.jpg")


def _peers_selection(loaded, image, keep: int):
    """What FastV-style and FasterVLM-style code does: the tower with eager attention returning every layer's
    attention maps, then [CLS] attention of the feature layer and a top-k per crop in Python."""
    import torch

    inputs = loaded.processor.image_processor(image, return_tensors="pt")
    pixel_values = inputs["pixel_values"][0]  # (N, 3, S, S)
    tower = loaded.model.model.vision_tower
    tower.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = tower(pixel_values.to(tower.dtype), output_attentions=True, output_hidden_states=True)
        attention = out.attentions[loaded.config.vision_feature_layer]  # (N, H, 1+P, 1+P)
        cls = attention[:, :, 0, 1:].mean(1)  # (N, P)
        per_crop = max(keep // cls.shape[0], 1)
        kept = []
        for n in range(cls.shape[0]):  # the peers' Python loop
            kept += (torch.topk(cls[n], per_crop).indices + n * cls.shape[1]).tolist()
        features = loaded.model.model.multi_modal_projector(
            out.hidden_states[loaded.config.vision_feature_layer][:, 1:]
        )
        return features.reshape(-1, features.shape[-1])[sorted(kept)]
    finally:
        tower.set_attn_implementation("sdpa")


def _transformers(loaded, image, config: BenchConfig, samples: dict) -> dict[str, Any]:
    """transformers' own LlavaNextForConditionalGeneration with all tokens: processor + generate(1 token)."""
    import torch

    model = loaded.model
    dtype = torch.float16 if config.device == "cuda" else torch.float32
    model = model.to(device=config.device, dtype=dtype).eval()
    model.set_attn_implementation("sdpa")
    text = loaded.render_prompt(PROMPT)

    def first_token():
        inputs = loaded.processor(images=image, text=text, return_tensors="pt").to(config.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=1, do_sample=False, pad_token_id=0)
        if config.device == "cuda":
            torch.cuda.synchronize()

    if config.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = _times(first_token, config.heavy_repeats)
    samples["ttft transformers all tokens"] = times
    tokens = loaded.processor(images=image, text=text, return_tensors="pt")["input_ids"].shape[1]
    result = {"ttft_ms": _median(times), "prompt_tokens": int(tokens), "dtype": str(dtype).replace("torch.", "")}
    if config.device == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _fresh_rss(bundle: Path, image: Path) -> float:
    from .footprint import ANSWER

    proc = subprocess.run([sys.executable, "-c", ANSWER, str(bundle), str(image)], capture_output=True, text=True)
    if proc.returncode != 0:
        return float("nan")
    return json.loads(proc.stdout.strip().splitlines()[-1])["rss_mb"]


def _headline_markdown(r: dict[str, Any]) -> str:
    """bench.md of a --headline run: time to first token both ways, decode, the first request, the profile."""
    m, c, a, t = r["machine"], r["config"], r["adafv"], r["transformers"]
    lines = [
        f"# adafv bench --headline: {c['shapes']} on {c['device']}",
        "",
        f"Machine: {m.get('cpu', m['machine'])}. Medians of {c['repeats']} repeats. {r['seconds']:.0f} s in all.",
        "",
        "| | keep | time to first token (ms) | vs transformers |",
        "|---|---|---|---|",
        f"| transformers ({t['dtype']}, every token: {t['prompt_tokens']} prompt tokens) | all | {t['ttft_ms']:.1f} "
        "| 1.00x |",
        f"| adafv bundle, end to end | {a['keep']} | {a['ttft_ms']:.1f} | {t['ttft_ms'] / a['ttft_ms']:.2f}x faster |",
        "",
        f"Decode {a['decode_ms_per_token']:.2f} ms per token; the first request after loading took "
        f"{a['first_request_ttft_ms']:.1f} ms ({a['first_request_vs_median']:.2f}x the median); vision on "
        f"{a['providers']['vision']}, decoder on {a['providers']['decoder']}."
        + (f" GPU memory in use with the bundle loaded: {a['gpu_memory_used_mb']:.0f} MB." if "gpu_memory_used_mb"
           in a else "")
        + (f" transformers' peak GPU memory: {t['peak_gpu_mb']:.0f} MB." if "peak_gpu_mb" in t else ""),
        "",
    ]  # fmt: skip
    if "profile" in r:
        from .profile import markdown_lines

        lines += markdown_lines(r["profile"])
    lines.append(f"Reproduce: `adafv bench --shapes {c['shapes']} --device {c['device']} --repeats {c['repeats']} "
                 "--headline`")  # fmt: skip
    return "\n".join(lines) + "\n"


def markdown(r: dict[str, Any]) -> str:
    if r["config"].get("headline"):
        return _headline_markdown(r)
    m, c, v, a, t = r["machine"], r["config"], r["vision"], r["adafv"], r["transformers"]
    lines = [
        f"# adafv bench: {c['shapes']} on {c['device']}",
        "",
        f"Machine: {m.get('cpu', m['machine'])}; Python {m['python']}, torch {m.get('torch')}, "
        f"onnxruntime {m.get('onnxruntime') or m.get('onnxruntime-gpu')}. Medians of {c['repeats']} repeats "
        f"({c['heavy_repeats']} for transformers and the eager path). {r['seconds']:.0f} s in all.",
        "",
        f"## Time to first token ({v['crops']} crops, {v['visual_tokens']} visual tokens)",
        "",
        "| | keep | ms | vs transformers |",
        "|---|---|---|---|",
        f"| transformers, every token it uses ({t['dtype']}; {t['prompt_tokens']} prompt tokens: its stock visual "
        f"tokens) | all | {t['ttft_ms']:.0f} | 1.00x |",
        f"| adafv bundle, measured end to end | {a['keep']} | {a['ttft_ms']:.0f} | "
        f"{t['ttft_ms'] / a['ttft_ms']:.2f}x faster |",
        "",
        "By keep: the sum of the measured stages (preprocess + vision + prefill), and prefill alone as a ratio to all "
        "tokens next to what its FLOP count predicts:",
        "",
        "| keep | preprocess | vision | prefill | time to first token | prefill / all | FLOPs / all |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, s in r["ttft_by_keep"].items():
        p = r["prefill"][k]
        lines.append(f"| {k} | {s['preprocess']:.0f} | {s['vision']:.0f} | {s['prefill']:.0f} | {s['total']:.0f} | "
                     f"{p['ratio_to_all']:.3f} | {p['flop_ratio']:.3f} |")  # fmt: skip
    lines += [
        "",
        "## Stages",
        "",
        "| stage | baseline | ms | adafv | ms |",
        "|---|---|---|---|---|",
    ]
    for row in r["preprocess"]:
        same = {True: "identical pixels", False: "PIXELS DIFFER",
                None: "resized to the bundle's size; the processor picks another"}[row["identical_pixels"]]  # fmt: skip
        lines.append(f"| preprocess {row['size']} | HF processor (PIL) | {row['hf_ms']:.1f} | runtime, uint8 "
                     f"({same}) | {row['adafv_ms']:.1f} |")  # fmt: skip
    lines += [
        "| vision + selection | peers: eager attentions in every layer, selection in Python | "
        + ("not measured for Qwen" if v["peers_eager_attentions_ms"] != v["peers_eager_attentions_ms"]
           else f"{v['peers_eager_attentions_ms']:.0f}")
        + f" | the bundle's fp32 graph | {v['fp32_graph_ms']:.0f} |",
        *([f"| vision + selection, reduced precision | the fp32 graph | {v['fp32_graph_ms']:.0f} | {v['graph']} "
           f"(what the runtime runs here) | {v['adafv_graph_ms']:.0f} |"]
          if r.get("precision", {}).get("vision") != "fp32" else []),  # fmt: skip
        f"| the selection inside the graph | fp32 graph without selection | {v['without_selection_ms']:.0f} | "
        f"with selection | {v['fp32_graph_ms']:.0f} |",
        "",
        *_isolated(v.get("selection_isolated")),
        *_profiled(r.get("profile")),
        f"The first request after loading: {a['first_request_ttft_ms']:.0f} ms to the first token "
        f"({a['first_request_vs_median']:.2f}x the median).",
        "",
        f"Decode: {a['decode_ms_per_token']:.1f} ms per token at keep {a['keep']}; "
        f"{a['host_bytes_per_decode_step']} bytes cross the host boundary per decode step; KV cache "
        f"{a['kv_cache_bytes'] / 1e6:.1f} MB for a 16-token answer; peak RSS of a fresh process that loads the bundle "
        f"and answers: {a['peak_rss_mb']:.0f} MB. Sessions: vision on {a['providers']['vision']}, decoder on "
        f"{a['providers']['decoder']}; warm-up {r['bundle']['warmup_ms']:.0f} ms.",
        "" if "peak_gpu_mb" not in t else f"transformers' peak GPU memory: {t['peak_gpu_mb']:.0f} MB.",
        ""
        if "calibration" not in v
        else (
            f"{v['graph']} against the fp32 graph on the held-out calibration half (random weights): kept-position "
            f"recall {v['calibration']['recall']:.3f}, Jaccard {v['calibration']['jaccard']:.3f}, cosine of the kept "
            f"tokens {v['calibration']['cosine']:.4f}, same greedy answer {v['calibration']['answer_agreement']:.0%}, "
            f"{v['fp32_graph_ms'] / v['adafv_graph_ms']:.2f}x faster here, file {v['calibration']['size_ratio']:.2f} "
            "of the fp32 graph's."
        ),
        "",
    ]
    b = r.get("build")
    if b:
        prec = r.get("precision", {})
        lines += [
            f"## The build ({b['seconds']:.0f} s{', reused from the cache' if b['reused'] else ''}; checks "
            f"{b['checks_share']:.0%} of it, the precision report {b['report_s'] / b['seconds']:.0%})"
            if b["seconds"] else "## The build",
            "",
            f"Vision graph measured as what the runtime runs: {prec.get('vision')}"
            + (" (chosen with --precision)" if prec.get("chosen_by") == "--precision" else
               f" ({prec['why']})" if c["device"] == "cpu" and prec.get("why") else "") + ".",  # fmt: skip
            "",
            "| step | s |",
            "|---|---|",
            *[f"| {k} | {v:.1f} |" for k, v in b["steps_s"].items()],
            "",
        ]
    extra = (f" --precision {c['precision']}" if c.get("precision") else "") + (
        f" --resolution {c['resolution'][1]}x{c['resolution'][0]}" if c.get("resolution") else "")  # fmt: skip
    lines.append(f"Reproduce: `adafv bench --shapes {c['shapes']} --device {c['device']} --repeats {c['repeats']}"
                 f"{extra}`")  # fmt: skip
    return "\n".join(lines) + "\n"


def _profiled(p: dict[str, Any] | None) -> list[str]:
    from .profile import markdown_lines

    return markdown_lines(p) if p else []


def _isolated(o: dict[str, Any] | None) -> list[str]:
    """The selection's parts timed alone (eval/overhead.py), as markdown lines."""
    from .overhead import markdown_lines

    return markdown_lines(o) if o else []


def plot(r: dict[str, Any], path: Path) -> str:
    """Time to first token vs keep, stacked by stage, with transformers' line; says why when it cannot draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "not drawn: matplotlib is not installed (pip install matplotlib)"
    keeps = list(r["ttft_by_keep"])
    stages = ("preprocess", "vision", "prefill")
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = np.zeros(len(keeps))
    for stage in stages:
        values = np.array([r["ttft_by_keep"][k][stage] for k in keeps]) / 1000
        ax.bar(keeps, values, bottom=bottom, label=stage)
        bottom += values
    ax.axhline(r["transformers"]["ttft_ms"] / 1000, color="black", linestyle="--",
               label=f"transformers, all tokens ({r['transformers']['prompt_tokens']} in its prompt)")  # fmt: skip
    ax.set_xlabel("visual tokens reaching the LLM (adafv's runtime)")
    ax.set_ylabel("time to first token (s)")
    ax.set_title(f"adafv, {r['config']['shapes']} on {r['config']['device']} ({r['machine'].get('cpus')} CPUs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def print_summary(report: dict[str, Any], out_dir: Path) -> None:
    print((out_dir / "bench.md").read_text())
    print(f"written: {out_dir / 'bench.json'}, {out_dir / 'bench.md'}, bench.png {report['png']}")
