"""`adafv engine`: build a bundle (docs/design.md) atomically.

    engines/<model>-k<keep>-<precision>-<target>/      target: cpu, or cuda (desktop GPUs and Jetson)
      manifest.json            written last, through adafv.runtime.manifest (the runtime validates it)
      build.json               the frozen EngineConfig this bundle was built from
      vision.onnx(.data)       vision tower + projector + AdaFV selection, fixed keep          (always)
      vision.fp16.onnx(.data)  mixed precision, selection and LayerNorms in FP32             (--precision fp16)
      vision.<trt>-sm<cc>.plan TensorRT engine                                               (where tensorrt imports)
      embed.npy                LLM input embeddings (fp16 beside an int4 LLM, fp32 beside fp32)
      llm/                     decoder taking inputs_embeds with a KV cache (onnxruntime-genai model builder, built
                               for the target: -e cpu (fp32 I/O) or -e cuda (fp16 I/O and KV cache))
      tokenizer/               tokenizer.json and config

Everything is written into a hidden partial folder next to the target and swapped into place at the end (atomic.py):
an interrupted build leaves nothing that loads, and the target is never left half old, half new, or missing. Before
the swap, the build verifies everything it wrote: the TensorRT lint and ONNX Runtime parity of the vision graph (and
of its FP16 variant), and the decoder against the PyTorch LM.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import adafv
from adafv.config import AdaFVConfig
from adafv.errors import ConfigError
from adafv.models import LoadedModel, ModelSpec, fingerprint, load, peek, resolve
from adafv.runtime import manifest as bundle_format
from adafv.runtime.contract import OUTPUTS, TOLERANCES
from adafv.runtime.errors import BundleError
from adafv.runtime.providers import TARGET_PROVIDERS, TARGETS

from .atomic import partial_dir, remove_stale, swap_into_place
from .checks import LintError, ParityCase, check_parity, overlap, polygraphy_lint, trt_lint
from .errors import BuildError
from .graph import GraphShapes, VisionGraph, check_keep, export_onnx

PRECISIONS = ("fp32", "fp16", "int8")
PROBE_PROMPTS = ("What is in the picture?", "Where is the small red object? Answer in one word.")
PHOTO = "rocket.jpg"  # a real photo among the parity probes (shipped in adafv.assets)


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Everything a bundle is built from; frozen, validated, written as build.json next to the artifacts."""

    model: str
    selection: AdaFVConfig
    precision: str = "fp32"
    llm_precision: str = "int4"
    max_crops: int | None = None  # None: the most the model's processor emits
    max_text: int = 256
    target: str = "auto"  # cpu | cuda; auto = cuda where this environment's ONNX Runtime is the GPU build
    max_probes: int | None = None  # parity probes: the real photo first, then one per grid; None = all of them
    calib_data: str | None = None  # int8: images folder or JSONL (its calibration split); None = the shipped set
    allow_degraded: bool = False  # int8: keep a graph whose held-out recall is under 0.9
    resolution: tuple[int, int] | None = None  # (height, width) of a dynamic-resolution model's bundle; None: VGA's

    def __post_init__(self):
        if self.target == "auto":
            from adafv.runtime.providers import default_target

            object.__setattr__(self, "target", default_target())
        if self.target not in TARGETS:
            raise ConfigError(f"unknown target {self.target!r}; choose auto, {', '.join(TARGETS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose {', '.join(PRECISIONS)}")
        if self.calib_data is not None and not Path(self.calib_data).exists():
            raise ConfigError(f"calibration data not found: {self.calib_data} (a folder of images or a JSONL file)")
        if self.llm_precision not in ("int4", "fp32"):
            raise ConfigError(f"unknown LLM precision {self.llm_precision!r}; choose int4 or fp32")
        if self.max_crops is not None and self.max_crops < 1:
            raise ConfigError(f"max_crops must be >= 1, got {self.max_crops}")
        if not 1 <= self.max_text <= 8192:
            raise ConfigError(f"max_text must be in 1..8192, got {self.max_text}")
        if self.max_probes is not None and self.max_probes < 1:
            raise ConfigError(f"max_probes must be >= 1 (the real photo), got {self.max_probes}")
        if self.resolution is not None:
            r = self.resolution
            if (not isinstance(r, (tuple, list)) or len(r) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in r)):  # fmt: skip
                raise ConfigError(f"resolution must be (height, width) in pixels, got {r!r}")
            object.__setattr__(self, "resolution", (int(r[0]), int(r[1])))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["selection"] = self.selection.to_dict()
        return d


@dataclasses.dataclass
class BuildResult:
    path: Path
    manifest: dict[str, Any]
    reused: bool
    seconds: float


def default_out(config: EngineConfig) -> Path:
    name = resolve(config.model).name
    return Path("engines") / f"{name}-k{config.selection.keep}-{config.precision}-{config.target}"


def graph_shapes(arch, config, max_crops: int | None, max_text: int,
                 resolution: tuple[int, int] | None = None) -> GraphShapes:  # fmt: skip
    if arch.positions == "mrope":  # dynamic resolution: one image at the bundle's fixed (height, width)
        resolution = resolution or arch.default_resolution(config)
        arch.check_resolution(config, resolution)
        patch = config.vision_config.patch_size * config.vision_config.spatial_merge_size
        merged = (resolution[0] // patch) * (resolution[1] // patch)
        return GraphShapes(crops=(1, 1), max_text=max_text, image_hw=tuple(resolution), anyres=False,
                           hidden_size=config.text_config.hidden_size, patches_per_crop=merged)  # fmt: skip
    if resolution is not None:
        raise ConfigError("--resolution is for dynamic-resolution models (Qwen2.5-VL); this model's crops are "
                          "fixed by its processor")  # fmt: skip
    lo, hi = arch.crop_range(config)
    if max_crops is not None:
        if max_crops < lo:
            raise ConfigError(f"--max-crops {max_crops} is below the {lo} crops every image of this model has")
        hi = min(hi, max_crops)
    return GraphShapes(
        crops=(lo, hi),
        max_text=max_text,
        image_hw=(config.vision_config.image_size, config.vision_config.image_size),
        hidden_size=config.text_config.hidden_size,
        patches_per_crop=(config.vision_config.image_size // config.vision_config.patch_size) ** 2,
        anyres=arch.anyres,
    )


def _tool_versions() -> dict[str, str]:
    versions = {"adafv": adafv.__version__, "python": platform.python_version()}
    for dist in ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxruntime-genai", "polygraphy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def build_key(config: EngineConfig, spec: ModelSpec) -> str:
    """Equal keys mean an existing bundle can be reused as is (computed without loading any weights)."""
    payload = {
        "format": bundle_format.FORMAT_VERSION,
        "config": config.to_dict(),
        "source": fingerprint(spec),
        "tools": _tool_versions(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def probe_cases(
    loaded: LoadedModel, graph: VisionGraph, shapes: GraphShapes, spec: dict, max_probes: int | None = None
) -> list[ParityCase]:
    """Parity inputs as the runtime will see them: the runtime's uint8 preprocessing and the model's embedding table
    on a real photo and on random-pixel images of every grid shape the processor picks, with real prompts. Each
    probe also checks that the graph's pixel table turns the runtime's bytes into the processor's pixel_values, bit
    for bit."""
    import torch
    from PIL import Image

    from adafv.pipeline import Reference
    from adafv.runtime.preprocess import crop_to_aspect, normalize, patchify, preprocess

    reference = Reference(loaded)
    rng = np.random.default_rng(0)
    images: list[tuple[str, Any]] = []
    from adafv.assets import path as asset
    from adafv.runtime import load_image

    images.append((PHOTO, load_image(asset(PHOTO))))  # shipped in the package: never silently missing
    fixed = spec["kind"] == "qwen2vl"  # one image at the bundle's resolution
    sizes = [(shapes.image_hw[0] + 3, shapes.image_hw[1] + 5)] if fixed else [(200, 160)]
    for h, w in loaded.config.image_grid_pinpoints if shapes.anyres else sizes:
        pixels = rng.integers(0, 256, (h + 3, w + 5, 3), dtype=np.uint8)
        images.append((f"random {h + 3}x{w + 5}", Image.fromarray(pixels)))
    cases = []
    for i, (name, image) in enumerate(images[:max_probes]):
        prompt = PROBE_PROMPTS[i % len(PROBE_PROMPTS)]
        if fixed:  # cropped to the bundle's aspect, resized by the runtime: the reference sees that very image
            image = Image.fromarray(preprocess(crop_to_aspect(image, spec), spec)[0][0].transpose(1, 2, 0))
        prepared = reference.prepare(image, prompt)
        n = 1 if fixed else prepared.num_crops
        if not shapes.crops[0] <= n <= shapes.crops[1]:
            continue  # --max-crops excludes this grid
        text = reference.embed(prepared.post_ids).detach().float()  # (T, D)
        if text.shape[0] > shapes.max_text:
            continue
        pixels, grid = preprocess(image, spec)  # uint8 (N, 3, S, S), what the runtime sends
        values = patchify(normalize(pixels, spec), spec) if fixed else normalize(pixels, spec)
        if grid != tuple(prepared.grid) or not np.array_equal(values, prepared.pixel_values.numpy()):
            raise BuildError(f"the runtime's preprocessing differs from the model's image processor on {name}")
        inputs = [torch.from_numpy(pixels), text]
        if shapes.anyres:
            inputs.append(torch.tensor(prepared.grid, dtype=torch.int64))
        with torch.no_grad():
            tokens, positions = graph(*inputs)
        feeds = {k: v.numpy() for k, v in zip(shapes.input_names, inputs)}
        cases.append(ParityCase(f"{name} / {prompt!r}", feeds, (tokens.numpy(), positions.numpy())))
    return cases


class _Steps:
    """Rich progress on stderr, one line per build step with its time; silent when disabled."""

    def __init__(self, enabled: bool):
        self.console = None
        if enabled:
            from rich.console import Console

            self.console = Console(stderr=True)
        self.times: dict[str, float] = {}

    def run(self, label: str, fn, *args, **kwargs):
        start = time.perf_counter()
        if self.console is not None:
            with self.console.status(f"[bold]{label}[/]…"):
                result = fn(*args, **kwargs)
        else:
            result = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        self.times[label] = round(seconds, 2)
        if self.console is not None:
            self.console.print(f"  [green]✓[/] {label} [dim]({seconds:.1f} s)[/]")
        return result


def check_out(out: Path) -> bool:
    """What `--out` may name: a path that does not exist yet, an empty folder, or an adafv bundle (a folder whose
    manifest.json says so). Anything else (a file, a symbolic link, a folder of other files such as the `engines/`
    parent, the current directory) is refused with a BuildError before any work: a build replaces its target, and
    must never delete what is not its own. Returns whether the target is an existing bundle."""
    if out.is_symlink():
        raise BuildError(f"--out {out} is a symbolic link: give the real path of the bundle folder")
    if not out.exists():
        return False
    if not out.is_dir():
        raise BuildError(f"--out {out} is an existing file, not a bundle folder: choose a new path")
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise BuildError(f"--out {out} is the current directory (or holds it): choose a new path for the bundle")
    if os.path.ismount(out):
        raise BuildError(f"--out {out} is a mount point: choose a folder inside it")
    if _is_bundle(out):
        return True
    entries = sorted(p.name for p in out.iterdir())
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise BuildError(
            f"--out {out} is an existing folder that is not an adafv bundle ({len(entries)} entries: {shown}); "
            "a build replaces its target, so choose a new path"
        )
    return False


def _is_bundle(path: Path) -> bool:
    """Whether `path` holds an adafv bundle's manifest (any format version: an old bundle is still ours)."""
    try:
        manifest = json.loads((path / bundle_format.MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == bundle_format.FORMAT


def _check_writable(out: Path) -> None:
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BuildError(f"cannot create the output directory {parent}: {e.strerror}") from e
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BuildError(f"cannot write to {parent}: permission denied")


def build(config: EngineConfig, out: Path | None = None, force: bool = False, progress: bool = True) -> BuildResult:
    """Build (or reuse) the bundle for `config` at `out` (default engines/<model>-k<keep>-<precision>-<target>)."""
    start = time.perf_counter()
    spec = resolve(config.model)  # unknown names fail here, before any work
    out = Path(out) if out is not None else default_out(config)
    arch, model_config = peek(config.model)
    shapes = graph_shapes(arch, model_config, config.max_crops, config.max_text, config.resolution)
    check_keep(config.selection, shapes)  # before any work: no weights loaded yet
    existing_bundle = check_out(out)
    _check_writable(out)
    steps = _Steps(progress)
    key = build_key(config, spec)
    if existing_bundle and not force:
        reused = _reusable(out, key)
        if steps.console is not None:
            steps.console.print(f"[green]up to date[/]: {out} (use --force to rebuild)")
        return BuildResult(out, reused, True, time.perf_counter() - start)
    remove_stale(out)  # what killed builds of this target left behind
    loaded = steps.run(f"load {spec.name}", load, config.model)
    tmp = partial_dir(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        ctx = BuildContext(config, loaded, shapes, tmp, key, steps)
        for step in STEPS:
            step(ctx)
        manifest = bundle_format.read_manifest(tmp)  # as the runtime will read it
        check_out(out)  # again: the target may have changed during the build
        swap_into_place(tmp, out)
    except BaseException:  # KeyboardInterrupt included: leave nothing half-written behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = BuildResult(out, manifest, False, time.perf_counter() - start)
    if steps.console is not None:
        _summary(steps.console, result)
    return result


def _reusable(out: Path, key: str) -> dict:
    """The manifest of the bundle at `out` when it was built from these settings and every file checks out
    (sizes and sha256); otherwise a BuildError saying why and that --force replaces it."""
    try:
        manifest = bundle_format.read_manifest(out)
    except BundleError as e:
        raise BuildError(f"{e}; use --force to replace it") from e
    if manifest.get("build_key") != key:
        raise BuildError(
            f"{out} holds a bundle built from other settings, weights or tool versions; use --force to replace it, "
            "or choose another --out"
        )
    try:
        bundle_format.verify_files(out, manifest)
    except BundleError as e:
        raise BuildError(f"{e}; use --force to rebuild it") from e
    return manifest


@dataclasses.dataclass
class BuildContext:
    """What the build steps share: the inputs (config, model, shapes, the partial folder, the build key, the step
    timer) and what each step adds (the fields below `steps`). A step is a function of the context; STEPS is the
    build, in order; each says by its name what it makes or checks."""

    config: EngineConfig
    loaded: LoadedModel
    shapes: GraphShapes
    root: Path
    key: str
    steps: _Steps
    preprocess: dict = dataclasses.field(default_factory=dict)
    graph: Any = None
    exported: dict = dataclasses.field(default_factory=dict)
    lint: Any = None
    cases: list = dataclasses.field(default_factory=list)
    session: Any = None
    parity: dict = dataclasses.field(default_factory=dict)
    vision_files: dict = dataclasses.field(default_factory=dict)
    fp32_nodes: list = dataclasses.field(default_factory=list)
    engines: list = dataclasses.field(default_factory=list)
    tensorrt: str = ""
    llm: dict = dataclasses.field(default_factory=dict)
    embed: dict = dataclasses.field(default_factory=dict)
    layout: dict = dataclasses.field(default_factory=dict)
    tokenizer: dict = dataclasses.field(default_factory=dict)
    int8: dict | None = None
    calibration: dict | None = None
    manifest: dict = dataclasses.field(default_factory=dict)  # unsigned; the file carries the digest

    @property
    def vision(self) -> Path:
        return self.root / "vision.onnx"


def step_graph(ctx: BuildContext) -> None:
    """The vision graph: tower to the feature layer + projector + the selection, exported with a fixed keep."""
    from adafv.runtime.preprocess import value_table

    from .preprocess_spec import image_processor_spec

    arch, fixed = ctx.loaded.arch, ctx.loaded.arch.positions == "mrope"
    try:  # unsupported processors fail before long steps
        ctx.preprocess = image_processor_spec(ctx.loaded.processor, ctx.shapes.image_hw if fixed else None)
    except ValueError as e:
        raise BuildError(f"the model's image processor cannot be reproduced by the runtime: {e}") from e
    # the FP32 graph is the reference; FP16 derives from it
    visual = arch.graph_visual(ctx.loaded.model, ctx.shapes.image_hw).float()
    ctx.graph = VisionGraph(visual, ctx.config.selection, ctx.shapes.anyres, value_table(ctx.preprocess)).eval()
    ctx.exported = ctx.steps.run("export vision graph to ONNX", export_onnx, ctx.graph, ctx.shapes, ctx.vision)
    ctx.vision_files = {"fp32": ctx.vision.name}


def step_lint(ctx: BuildContext) -> None:
    """TensorRT's ONNX support without TensorRT, then polygraphy's lint."""
    ctx.lint = ctx.steps.run("lint for TensorRT", trt_lint, ctx.vision)
    if not ctx.lint.ok:
        raise LintError("vision.onnx is not TensorRT-ready:\n  " + "\n  ".join(ctx.lint.problems))
    ok, text = ctx.steps.run("polygraphy check lint", polygraphy_lint, ctx.vision)
    if not ok:
        raise LintError(f"polygraphy check lint failed on vision.onnx:\n{text[-3000:]}")
    if text.startswith("not run:"):  # a graph over 2 GB: the manifest says so
        ctx.lint.notes.append(f"polygraphy check lint {text}")


def step_parity(ctx: BuildContext) -> None:
    """The graph in ONNX Runtime against the PyTorch module on the probes: positions identical, tokens close."""
    ctx.cases = ctx.steps.run("prepare parity probes", probe_cases, ctx.loaded, ctx.graph, ctx.shapes, ctx.preprocess,
                              ctx.config.max_probes)  # fmt: skip
    ctx.session = _session(ctx.vision)
    ctx.parity = {"fp32": ctx.steps.run("parity: ONNX Runtime vs PyTorch", check_parity, ctx.session, ctx.cases)}


def step_fp16(ctx: BuildContext) -> None:
    """--precision fp16: the mixed-precision graph (calib.fp16), linted and checked against PyTorch."""
    if ctx.config.precision != "fp16":
        return
    import onnx

    from adafv.calib.fp16 import to_fp16
    from adafv.calib.regions import fp32_nodes

    half = ctx.root / "vision.fp16.onnx"
    ctx.steps.run("FP16 graph (selection and LayerNorms in FP32)", to_fp16, ctx.vision, half)
    lint16 = trt_lint(half)
    if not lint16.ok:
        raise LintError("vision.fp16.onnx is not TensorRT-ready:\n  " + "\n  ".join(lint16.problems))
    ctx.fp32_nodes = fp32_nodes(onnx.load(str(ctx.vision), load_external_data=False))
    ctx.parity["fp16"] = ctx.steps.run("parity: FP16 graph vs PyTorch", _fp16_parity, half, ctx.cases)
    ctx.vision_files["fp16"] = half.name


def step_tensorrt(ctx: BuildContext) -> None:
    """The TensorRT engine where tensorrt imports and a GPU answers; otherwise a note saying why not."""
    ctx.tensorrt = _maybe_tensorrt(ctx.config, ctx.root, ctx.shapes, ctx.vision, ctx.vision_files, ctx.fp32_nodes,
                                   ctx.session, ctx.cases, ctx.steps, ctx.engines)  # fmt: skip


def step_llm(ctx: BuildContext) -> None:
    """The decoder (onnxruntime-genai's builder, for the target), the embedding table, the layout's newline, and the
    decoder checked in ONNX Runtime against PyTorch."""
    from .llm import export_embeddings, export_llm, verify_decoder

    config, loaded, root = ctx.config, ctx.loaded, ctx.root
    ctx.llm = ctx.steps.run(f"LLM decoder ({config.llm_precision}, {config.target}, onnxruntime-genai builder)",
                            export_llm, loaded.model, loaded.processor.tokenizer, root / "llm", root / ".scratch",
                            config.llm_precision, config.target)  # fmt: skip
    ctx.embed = export_embeddings(loaded.model, root / "embed.npy",
                                  "float32" if config.llm_precision == "fp32" else "float16")  # fmt: skip
    ctx.layout = {"kind": config.selection.layout if ctx.shapes.anyres else "compact"}
    if ctx.layout["kind"] == "rows":  # the model's own row separator, in the embedding table's dtype
        newline = loaded.arch.newline(loaded.model).detach().float().numpy().astype(ctx.embed["dtype"])  # (D,)
        np.save(root / "newline.npy", newline)
        ctx.layout["newline"] = "newline.npy"
    table = np.load(root / "embed.npy", mmap_mode="r")
    checks = [_prompt_ids(loaded, prompt) for prompt in PROBE_PROMPTS]
    ctx.llm["verify"] = ctx.steps.run("verify the decoder in ONNX Runtime against PyTorch", verify_decoder,
                                      loaded.model, root, ctx.llm, table, checks)  # fmt: skip


def step_tokenizer(ctx: BuildContext) -> None:
    """The tokenizer and the frozen build config; then the manifest, so that the reduced-precision steps can load
    the bundle as the runtime will."""
    from .llm import export_tokenizer

    ctx.tokenizer = export_tokenizer(ctx.loaded.processor, ctx.root / "tokenizer")
    (ctx.root / "build.json").write_text(json.dumps(ctx.config.to_dict(), indent=2, sort_keys=True))
    write_manifest(ctx)


def step_release(ctx: BuildContext) -> None:
    """Past the decoder nothing runs in PyTorch (INT8 calibration and the precision report run in ONNX Runtime): the
    model's weights (moved to the meta device; its configs stay for the manifest), the vision module and the parity
    session are released, so calibration has their memory. The INT8 build of Qwen2.5-VL's tower at 644x476 was
    killed at 24 GB while they were held; the build loaded the model itself, so nobody else holds it."""
    import gc

    ctx.session, ctx.graph = None, None
    ctx.loaded.model.to("meta")
    gc.collect()


def step_int8(ctx: BuildContext) -> None:
    """--precision int8: the Q/DQ graph calibrated on the runtime's own feeds of the calibration half."""
    if ctx.config.precision != "int8":
        return
    import gc

    from adafv.calib.data import feeds, items
    from adafv.calib.int8 import quantize

    config, root = ctx.config, ctx.root
    pipe = _build_pipeline(ctx)
    calibration = list(feeds(pipe, items(config.calib_data, "calibration")))  # small: pixels and text embeddings
    del pipe  # its FP32 vision session: gigabytes that calibration's own session needs
    gc.collect()
    int8 = root / "vision.int8.onnx"
    here = pays = why = None
    if config.target == "cpu":  # whether this machine's CPU can make INT8 pay (the bundle may run elsewhere)
        from adafv.runtime.cpu import cpu, int8_pays

        here = cpu()
        pays, why = int8_pays(here)
    # 8-bit weights where integer dot products accumulate in int32; 7-bit where the kernels' 16 bits would saturate
    facts = ctx.steps.run("INT8 graph (Q/DQ; selection, LayerNorms, softmax in FP32)", quantize, ctx.vision, int8,
                          calibration, ctx.shapes.crops[0], config.target, pays is True)  # fmt: skip
    if config.target == "cuda":  # the S8S8 graph TensorRT takes; a cpu target's U8S8 graph is not for TensorRT
        lint = trt_lint(int8)
        if not lint.ok:
            raise LintError("vision.int8.onnx is not TensorRT-ready:\n  " + "\n  ".join(lint.problems))
    _session(int8)  # loads in ONNX Runtime, or a one-line BuildError
    ctx.vision_files["int8"] = int8.name
    if here is not None:
        from adafv.runtime.cpu import describe

        facts["built_on"] = {"cpu": describe(here), "int8_pays": pays, "why": why}
    ctx.int8 = facts


def step_report(ctx: BuildContext) -> None:
    """int8 / fp16: the report on the held-out half against the FP32 graph, within its share of the build's time;
    an INT8 graph that keeps under 0.9 of the FP32 positions (mean recall) fails the build unless allow_degraded."""
    if ctx.config.precision not in ("int8", "fp16"):
        return
    from adafv.calib.data import items
    from adafv.calib.report import MIN_RECALL, compare

    config, root = ctx.config, ctx.root
    pipe = _build_pipeline(ctx)
    heldout = items(config.calib_data, "heldout")
    # the build must not spend its time proving itself: the report gets at most REPORT_SHARE of the whole build
    budget = REPORT_SHARE / (1 - REPORT_SHARE) * sum(ctx.steps.times.values())
    report = ctx.steps.run(f"report: {config.precision} vs fp32 on the held-out half", compare, pipe,
                           root / ctx.vision_files[config.precision], ctx.vision, heldout, budget_s=budget)  # fmt: skip
    recall = report["mean"]["recall"]
    if config.precision == "int8" and recall < MIN_RECALL and not config.allow_degraded:
        raise BuildError(
            f"the INT8 graph keeps {recall:.2f} of the FP32 positions on held-out images (mean recall < {MIN_RECALL}); "
            "calibrate on data closer to yours (--calib-data) or accept it with --allow-degraded"
        )
    ctx.calibration = {"precision": config.precision, "mean": report["mean"], "images": report["images"],
                       "heldout": report["heldout"], "skipped": report["skipped"],
                       "data": config.calib_data or "shipped"}  # fmt: skip


def step_manifest(ctx: BuildContext) -> None:
    """The manifest, last: every file's size and sha256, every step's facts and seconds."""
    write_manifest(ctx)


STEPS = [step_graph, step_lint, step_parity, step_fp16, step_tensorrt, step_llm, step_tokenizer, step_release,
         step_int8, step_report, step_manifest]  # fmt: skip


def _build_pipeline(ctx: BuildContext):
    """The bundle as the runtime loads it (CPU provider, no hashing: the build wrote it a moment ago)."""
    from adafv.runtime import Pipeline

    return Pipeline.load(ctx.root, verify=False, warmup=False, providers=["CPUExecutionProvider"])


def manifest_of(ctx: BuildContext) -> dict:
    """The manifest's content from what the steps made (unsigned; `write_manifest` signs the file)."""
    from .llm import MIN_ONNXRUNTIME

    config, loaded, shapes = ctx.config, ctx.loaded, ctx.shapes
    fixed = loaded.arch.positions == "mrope"
    if fixed:
        cell = loaded.config.vision_config.patch_size * loaded.config.vision_config.spatial_merge_size
        merged = (shapes.image_hw[0] // cell, shapes.image_hw[1] // cell)
    before, after = loaded.prompt_template()
    tok = loaded.processor.tokenizer
    eos = loaded.model.generation_config.eos_token_id
    io = shapes.contract(config.selection.keep)
    manifest = {
        "format": bundle_format.FORMAT,
        "format_version": bundle_format.FORMAT_VERSION,
        "build_key": ctx.key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"name": loaded.spec.name, "source": loaded.spec.source, "arch": loaded.arch.name},
        "target": config.target,
        "providers": TARGET_PROVIDERS[config.target],
        "requires": {"onnxruntime": MIN_ONNXRUNTIME},
        "selection": config.selection.to_dict(),
        "precision": config.precision,
        "vision": {
            "files": dict(ctx.vision_files),
            "engines": ctx.engines,
            "tensorrt": ctx.tensorrt,
            "opset": ctx.exported["opset"],
            "inputs": io.inputs(),
            "outputs": io.outputs(),
            "crops": list(shapes.crops),
            "max_text": shapes.max_text,
            "patches_per_crop": shapes.patches_per_crop,
            "hidden_size": shapes.hidden_size,
            "tower": loaded.arch.tower_facts(loaded.config.vision_config),
            "grid": (
                "input image_grid = [rows, cols] of high-resolution crops, chosen by the runtime's anyres "
                "preprocessing (preprocess.crop_grid); it orders the kept tokens"
                if shapes.anyres
                else "single crop: no grid input"
            ),
            "reading_order": (
                "raster on the merged grid; kept_order = row * cols + col" if fixed
                else "base view raster, then the high-resolution crops stitched into one grid, raster"
            ),
            **({"merged_grid": list(merged)} if fixed else {}),
            "padding": "paper mode pads the last keep - V rows: position -1, token zeros",
            "lint": {"ops": ctx.lint.ops, "topk": ctx.lint.topk, "selection_nodes": ctx.lint.selection_nodes,
                     **({"notes": ctx.lint.notes} if ctx.lint.notes else {})},
            **({"int8": ctx.int8} if ctx.int8 is not None else {}),
        },
        "parity": ctx.parity,
        "preprocess": ctx.preprocess,
        "prompt": {
            "before": before,
            "after": after,
            "image_token": tok.convert_ids_to_tokens(loaded.image_token_id),
            "image_token_id": loaded.image_token_id,
            "text_after_image": "the tokens after the image placeholder feed relevance (docs/method.md §2)",
        },
        "tokenizer": {
            **ctx.tokenizer,
            "bos_token_id": tok.bos_token_id,
            "eos_token_ids": eos if isinstance(eos, list) else [eos],
            "pad_token_id": tok.pad_token_id,
        },
        "embed": ctx.embed,
        "layout": ctx.layout,
        "llm": {**ctx.llm, "positions": loaded.arch.positions},
        "tools": _tool_versions(),
        "timings_s": dict(ctx.steps.times),
    }
    if ctx.calibration is not None:
        manifest["calibration"] = ctx.calibration
    return manifest


def write_manifest(ctx: BuildContext) -> None:
    """Write (or rewrite) the signed manifest from the context: the runtime's own writer, which validates it."""
    ctx.manifest = manifest_of(ctx)
    ctx.manifest["files"] = bundle_format.file_table(ctx.root)
    bundle_format.write_manifest(ctx.root, ctx.manifest)


REPORT_SHARE = 0.15  # of the build's time, at most, for the precision report (it covers what fits, >= MIN_ITEMS items)


def _session(path: Path):
    """An ONNX Runtime CPU session over a graph the build wrote; its refusal is a one-line BuildError."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        lines = str(e).strip().splitlines()
        raise BuildError(f"ONNX Runtime {ort.__version__} refuses {path.name}: {lines[0] if lines else e}") from e


def _prompt_ids(loaded: LoadedModel, prompt: str) -> list[int]:
    """A chat-formatted question's token ids, without the image placeholder (a text-only check of the decoder)."""
    ids = loaded.processor.tokenizer(loaded.render_prompt(prompt), add_special_tokens=True).input_ids
    return [i for i in ids if i != loaded.image_token_id]


def _fp16_parity(path: Path, cases: list[ParityCase]) -> dict:
    """FP16 cannot match FP32 to the FP32 tolerance: report the overlap of kept positions and the token error."""

    session = _session(path)
    overlaps, worst = [], 0.0
    for case in cases:
        tokens, positions = session.run(list(OUTPUTS), case.feeds)
        want_tokens, want_positions = case.expected
        overlaps.append(overlap(positions, want_positions))
        same = positions == want_positions
        if same.any():
            worst = max(worst, float(np.abs(tokens[same] - want_tokens[same]).max()))
    if min(overlaps) < TOLERANCES.fp16_min_overlap:
        raise BuildError(f"the FP16 graph keeps different tokens: position overlap {min(overlaps):.2f} < "
                         f"{TOLERANCES.fp16_min_overlap:.2f}")  # fmt: skip
    return {"cases": len(cases), "min_position_overlap": min(overlaps), "max_token_abs_diff": worst}


def _maybe_tensorrt(config, root, shapes, vision, vision_files, fp32_nodes, session, cases, steps, engines) -> str:
    """Build the TensorRT engine where tensorrt imports and a GPU answers; otherwise say why not."""
    from .trt import TensorRTUnavailable, build_engine, trt_parity

    try:
        from .trt import tensorrt_version

        tensorrt_version()
    except TensorRTUnavailable as e:
        return f"not built: {e}"
    try:
        cache = root.parent / ".timing-cache"
        engine = steps.run(
            "TensorRT engine",
            build_engine,
            vision,
            root,
            shapes,
            config.precision,
            fp32_nodes,
            root / vision_files["fp16"] if "fp16" in vision_files else None,
            cache,
        )
        engine["parity"] = steps.run("parity: TensorRT vs ONNX Runtime", trt_parity, root / engine["file"], session,
                                     cases, TOLERANCES.trt_atol[config.precision if config.precision == "fp32"
                                                                else "fp16"])  # fmt: skip
    except TensorRTUnavailable as e:
        return f"not built: {e}"
    engines.append(engine)
    return f"built with TensorRT {engine['tensorrt']} for sm{engine['sm']}"


def _summary(console, result: BuildResult) -> None:
    from rich.table import Table

    m = result.manifest
    table = Table(title=f"{result.path.name} ({result.seconds:.0f} s)", show_header=True, header_style="bold")
    table.add_column("file")
    table.add_column("size", justify="right")
    for rel, meta in m["files"].items():
        if "/" in rel and not rel.startswith("llm/model.onnx"):
            continue
        table.add_row(rel, f"{meta['size'] / 1e6:.2f} MB")
    console.print(table)
    p = m["parity"]["fp32"]
    console.print(
        f"parity (ONNX Runtime vs PyTorch, {p['cases']} probes): positions {p['positions']}, "
        f"tokens max |diff| {p['max_token_abs_diff']:.2g}"
    )
    console.print(f"TensorRT: {m['vision']['tensorrt']}")
    built_on = m["vision"].get("int8", {}).get("built_on")
    if built_on:
        verdict = {True: "INT8 should pay on this CPU", False: "INT8 will not pay on this CPU",
                   None: "INT8 on this CPU: unknown"}[built_on["int8_pays"]]  # fmt: skip
        console.print(f"{verdict} ({built_on['cpu']}): {built_on['why']}")
    times = m.get("timings_s", {})
    if times:
        total = sum(times.values())
        slowest = sorted(times.items(), key=lambda kv: -kv[1])[:3]
        console.print("steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in slowest) + f" of {total:.0f} s in all "
                      "(every step's seconds: manifest.json timings_s)")  # fmt: skip
