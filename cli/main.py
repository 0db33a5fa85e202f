"""The `adafv` command: thin shells over the Python API (adafv, adafv.export, adafv.runtime, adafv.calib)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from adafv.config import GRAPH_METHODS, LAYOUTS, METHODS, MODES
from adafv.eval.shapes import SHAPES


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    print(result["text"])
    _print_stats(result)


def _print_stats(result: dict) -> None:
    stages = " · ".join(
        f"{k} {v:.0f} ms" if k != "decode_tokens_per_s" else f"{v:.0f} tok/s"
        for k, v in result["timings_ms"].items()
        if v is not None
    )
    print(
        f"[{result['path']}] kept {result['num_kept']}/{result['num_visual_tokens']} visual tokens "
        f"({result['method']}, {result['mode']}) · {stages}",
        file=sys.stderr,
    )


def is_bundle(path: str) -> bool:
    from adafv.runtime.manifest import is_bundle as bundle

    return bundle(path)


# what each command needs beyond the runtime, and the extra that installs it
NEEDS = {
    "torch": (("torch", "transformers"), "adafv[torch]"),
    "export": (
        ("torch", "transformers", "onnx", "onnxscript", "onnxruntime_genai"),
        "adafv[export] or adafv[export-gpu]",
    ),
}


def require(what: str, doing: str) -> None:
    """A one-line error naming the extra to install when a command needs packages this environment lacks."""
    import importlib.util

    from adafv.errors import ConfigError

    modules, extra = NEEDS[what]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"{doing} needs {', '.join(missing)}, which this environment lacks: pip install '{extra}'")


def _not_a_bundle(path: str) -> None:
    """A folder with a bundle's files but no manifest: say so, rather than trying it as a checkpoint."""
    folder = Path(path)
    if folder.is_dir() and not (folder / "config.json").is_file():
        if any((folder / name).exists() for name in ("vision.onnx", "llm", "embed.npy", "manifest.json.tmp")):
            from adafv.runtime.errors import BundleError

            raise BundleError(
                f"{folder} looks like a bundle but has no manifest.json (a build that did not finish?): rebuild it"
            )


def cmd_run(args) -> int:
    from adafv.runtime import load_image

    image = load_image(args.image)
    if is_bundle(args.model):
        return _run_bundle(args, image)
    _not_a_bundle(args.model)

    from adafv import AdaFVConfig, ConfigError
    from adafv.models import resolve

    resolve(args.model)  # an unknown name or path fails here, with or without torch
    require("torch", f"running {args.model} through the PyTorch reference path (not a bundle)")
    from adafv.pipeline import Reference

    method = args.method or "adafv"
    if args.keep is None and method != "full":
        raise ConfigError("--keep is required (the number of visual tokens to keep), unless --method full")
    config = AdaFVConfig(
        keep=args.keep if args.keep is not None else 1,
        method=method,
        mode=args.mode or "exact",
        legacy_offset=args.legacy_offset,
        seed=args.seed,
        layout=args.layout or "rows",
    )
    reference = Reference.load(args.model, dtype=args.dtype)
    result = reference.run(image, args.prompt, config, max_new_tokens=args.max_new_tokens)
    _print_result(result, args.json)
    return 0


def _run_bundle(args, image) -> int:
    """The torch-free path: never imports torch or transformers."""
    from adafv.runtime import Pipeline
    from adafv.runtime import manifest as bundle_format
    from adafv.runtime.errors import BundleError

    built = bundle_format.read_manifest(Path(args.model))
    asked = {"--method": (args.method, built["selection"]["method"]), "--mode": (args.mode, built["selection"]["mode"]),
             "--layout": (args.layout, built.get("layout", {}).get("kind"))}  # fmt: skip
    for flag, (want, have) in asked.items():
        if want is not None and want != have:
            raise BundleError(f"{args.model} was built with {flag[2:]} {have}, not {want}: {flag} applies to models "
                              f"(build a bundle with {flag} {want})")  # fmt: skip
    for flag, given in (("--legacy-offset", args.legacy_offset), ("--dtype", args.dtype)):
        if given:
            raise BundleError(f"{flag} applies to models (the PyTorch reference path), not to a bundle")
    warmup = {"auto": None, "on": True, "off": False}[args.warmup]
    pipe = Pipeline.load(args.model, keep=args.keep, engine=args.engine, warmup=warmup)
    stream = args.stream and not args.json
    on_token = (lambda piece: print(piece, end="", flush=True)) if stream else None
    result = pipe.run(
        image,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        on_token=on_token,
    )
    if stream:
        print(flush=True)
        _print_stats(result)
    else:
        _print_result(result, args.json)
    return 0


def cmd_engine(args) -> int:
    require("export", "building a bundle")
    from adafv import AdaFVConfig
    from adafv.export.bundle import EngineConfig, build

    config = EngineConfig(
        model=args.model,
        selection=AdaFVConfig(keep=args.keep, method=args.method, mode=args.mode, layout=args.layout),
        precision=args.precision,
        llm_precision=args.llm_precision,
        max_crops=args.max_crops,
        max_text=args.max_text,
        target=args.target,
        calib_data=str(args.calib_data) if args.calib_data else None,
        allow_degraded=args.allow_degraded,
        resolution=args.resolution,
    )
    result = build(config, out=args.out, force=args.force, progress=not args.quiet)
    print(result.path)
    return 0


def cmd_bench(args) -> int:
    require("export", "the benchmark (it builds a bundle and runs transformers beside it)")
    from adafv.eval.bench import BenchConfig, print_summary, run

    shapes = args.shapes or ("llava-next-7b" if args.device == "cuda" else "llava-next-1b")
    config = BenchConfig(shapes=shapes, device=args.device, repeats=args.repeats, quick=args.quick,
                         resolution=args.resolution, precision=args.precision, headline=args.headline)  # fmt: skip
    if args.dry_run:
        from adafv.eval.sizing import markdown, plan

        print(markdown(plan(config)), end="")
        return 0
    size = f"-{args.resolution[1]}x{args.resolution[0]}" if args.resolution else ""
    out = args.out or Path("bench") / f"{config.shapes}-{config.device}{size}"
    _check_out_folder(out)
    print_summary(run(config, out, progress=not args.quiet), out)
    return 0


def _check_out_folder(out: Path) -> None:
    """A folder a command writes several files into: it may exist as a folder, or be creatable."""
    from adafv.errors import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"--out {out}: {parent} is not writable")
            break


def _csv(kind, name: str):
    def parse(text: str):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"a comma-separated list of {name}, got {text!r}") from None

    return parse


def _keep(text: str):
    from adafv.eval.vqa import parse_keep

    return parse_keep(text)


def cmd_eval(args) -> int:
    from adafv.eval.vqa import evaluate

    if not is_bundle(args.model):
        require("torch", f"evaluating {args.model} through the PyTorch reference path (not a bundle)")
    from adafv.eval.vqa import default_out

    out = args.out or default_out(args.model, args.data)
    results = evaluate(args.model, args.data, args.method, args.keep, out, args.max_new_tokens, args.suffix,
                       args.limit, progress=not args.quiet)  # fmt: skip
    print((out / "results.md").read_text(), end="")
    print(f"written: {out / 'results.json'}, {out / 'results.md'} ({results['seconds']:.0f} s)")
    return 0


def cmd_convert(args) -> int:
    from adafv.eval.vqa import convert

    n = convert(args.format, args.source, args.images, args.out, force=args.force)
    print(f"{args.out}: {n} questions")
    return 0


def cmd_calib(args) -> int:
    from adafv.calib.data import items
    from adafv.calib.report import check_reference, compare, markdown
    from adafv.runtime import Pipeline
    from adafv.runtime.errors import BundleError

    pipe = Pipeline.load(args.bundle, warmup=False, providers=["CPUExecutionProvider"])
    files = pipe.manifest["vision"]["files"]
    reduced = next((files[p] for p in ("int8", "fp16") if p in files), None)
    if reduced is None:
        raise BundleError(f"{args.bundle} has no reduced-precision vision graph (build it with --precision int8|fp16)")
    reference = Path(args.bundle) / files["fp32"]
    if args.reference:
        ref = Pipeline.load(args.reference, warmup=False, providers=["CPUExecutionProvider"])
        check_reference(pipe, ref)
        reference = Path(args.reference) / ref.manifest["vision"]["files"]["fp32"]
    report = compare(pipe, Path(args.bundle) / reduced, reference, items(args.data, "heldout"), repeats=args.repeats)
    print(json.dumps(report, indent=2) if args.json else markdown(report, f"{reduced} vs {reference.name}"), end="")
    return 0


def cmd_serve(args) -> int:
    import importlib.util

    from adafv.errors import ConfigError

    api_key, source = args.api_key, "--api-key"
    if api_key is None and "ADAFV_API_KEY" in os.environ:
        api_key, source = os.environ["ADAFV_API_KEY"], "ADAFV_API_KEY"
    from adafv.serve.keys import check_api_key

    check_api_key(api_key, source)
    if args.ray_address and not args.replicas:
        raise ConfigError("--ray-address places replicas on a Ray cluster: give --replicas N too")
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"serving needs {', '.join(missing)}, which this environment lacks: pip install 'adafv[serve]'"
        )
    from adafv.serve.app import MAX_IMAGE_PIXELS, serve

    serve(args.bundle, args.host, args.port, api_key, args.max_queue, args.max_tokens, args.allow_local_files,
          args.replicas, args.ray_address, args.max_image_pixels or MAX_IMAGE_PIXELS)
    return 0


def cmd_ros(args) -> int:
    import importlib.util

    from adafv.errors import ConfigError

    if args.fastdds_profile:
        from adafv.ros import FASTDDS_PROFILE

        print(FASTDDS_PROFILE)
        return 0

    missing = [m for m in ("rclpy", "sensor_msgs", "std_msgs") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"adafv ros needs ROS 2's {', '.join(missing)}, which this environment lacks: pip install "
                          "'adafv[ros]' (x86-64 Linux, Python 3.10-3.12), or source a ROS 2 install's setup.bash "
                          "(on a Jetson: docs/ros.md)")  # fmt: skip
    if args.bundle and not is_bundle(args.bundle):
        _not_a_bundle(args.bundle)  # a half-built one says so; anything else is the runtime's one-line refusal
    from adafv.ros.node import run

    return run(args.bundle, args.ros_args or [])


def cmd_show(args) -> int:
    from adafv.eval.show import show

    if not is_bundle(args.model):
        _not_a_bundle(args.model)
        require("torch", f"showing {args.model}'s selection through the PyTorch reference path (not a bundle)")
        bad = [m for m in args.methods if m not in METHODS]
        if bad:
            from adafv.errors import ConfigError

            raise ConfigError(f"unknown method {', '.join(bad)}; choose from {', '.join(METHODS)}")
    kept = show(args.model, args.image, args.prompt, args.out, args.methods, args.keep, force=args.force)
    print(f"{args.out}: " + ", ".join(f"{m} kept {k}" for m, k in kept.items()))
    return 0


def cmd_plan(args) -> int:
    from adafv.eval.plan import DEVICES, main_json, plan, text

    devices = list(DEVICES) if args.device == "all" else [args.device]
    results = [plan(args.bundle, d, args.context, args.crops) for d in devices]
    print(main_json(results if len(results) > 1 else results[0]) if args.json else "\n\n".join(map(text, results)))
    return 0


def cmd_doctor(args) -> int:
    from adafv.runtime.doctor import format_report, report

    r = report(args.bundle)
    print(json.dumps(r, indent=2) if args.json else format_report(r))
    return 0


def cmd_models(args) -> int:
    from adafv.models import REGISTRY

    for spec in REGISTRY.values():
        print(f"{spec.name:22s} {spec.arch:11s} {spec.description}  [{spec.source}]")
    return 0


def cmd_demo(args) -> int:
    require("torch", "the demo (the PyTorch reference path)")
    from adafv.cli.demo import run_demo

    return run_demo(model=args.model, keep=args.keep)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2) instead of a usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _checked(kind, name: str, ok, rule: str):
    """An argparse type: parse with `kind`, then require `ok(value)`; the message says the rule and the value."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{rule}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    parse.__name__ = name
    return parse


POSITIVE = _checked(int, "positive", lambda v: v >= 1, "must be an integer >= 1")
NON_NEGATIVE = _checked(int, "non_negative", lambda v: v >= 0, "must be an integer >= 0")
TEMPERATURE = _checked(float, "temperature", lambda v: 0 <= v < 1e6, "must be a number >= 0 (0 = greedy)")
TOP_P = _checked(float, "top_p", lambda v: 0 < v <= 1, "must be a number in (0, 1]")
MAX_TEXT = _checked(int, "max_text", lambda v: 1 <= v <= 8192, "must be an integer in 1..8192")
PORT = _checked(int, "port", lambda v: 1 <= v <= 65535, "must be a port number in 1..65535")
def _resolution(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT (as cameras say it) -> (height, width)."""
    width, _, height = text.lower().partition("x")
    return int(height), int(width)


RESOLUTION = _checked(_resolution, "resolution", lambda v: min(v) >= 1, "must be WIDTHxHEIGHT in pixels, e.g. 644x476")
PIXELS = _checked(int, "pixels", lambda v: 1 <= v <= 256_000_000, "must be a pixel count in 1..256000000")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="adafv", description="AdaFV visual-token selection for fast VLMs")
    parser.add_argument("--version", action="version", version=f"adafv {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="answer a question about an image (a model name/path, or a bundle)")
    run.add_argument("model", help="registered name, checkpoint directory, or bundle directory (engines/...)")
    run.add_argument("--image", required=True, help="image file")
    run.add_argument("--prompt", required=True, help="the question")
    run.add_argument("--keep", type=POSITIVE, help="visual tokens to keep (a bundle has its own)")
    run.add_argument("--method", default=None, choices=list(METHODS), help="models: default adafv (bundles: their own)")
    run.add_argument("--mode", default=None, choices=list(MODES), help="models: default exact")
    run.add_argument(
        "--layout",
        default=None,
        choices=list(LAYOUTS),
        help="models: kept tokens in grid rows with the model's image_newline (default), or compact",
    )
    run.add_argument("--legacy-offset", action="store_true", help="paper mode: reproduce the released code's defect")
    run.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of the random baseline / of sampling")
    run.add_argument("--max-new-tokens", type=POSITIVE, default=32)
    run.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="weights dtype (default: checkpoint)")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--stream", action="store_true", help="print tokens as they come (bundles)")
    run.add_argument("--temperature", type=TEMPERATURE, default=0.0, help="bundles: 0 = greedy")
    run.add_argument("--top-p", type=TOP_P, default=1.0, help="bundles: nucleus sampling mass")
    run.add_argument(
        "--engine", default="auto", choices=["auto", "onnxruntime", "tensorrt"], help="bundles: the vision graph's "
        "backend"
    )
    run.add_argument(
        "--warmup",
        default="auto",
        choices=["auto", "on", "off"],
        help="bundles: run each stage once at load (auto: where a session runs on a GPU)",
    )
    run.set_defaults(func=cmd_run)

    engine = sub.add_parser("engine", help="build a bundle: ONNX vision graph (+ TensorRT engine) and int4 LLM")
    engine.add_argument("model", help="registered name or checkpoint directory")
    engine.add_argument("--keep", type=POSITIVE, required=True, help="visual tokens the bundle keeps (fixed)")
    engine.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"], help="the vision graph's")
    engine.add_argument("--llm-precision", default="int4", choices=["int4", "fp32"])
    engine.add_argument("--method", default="adafv", choices=list(GRAPH_METHODS))
    engine.add_argument("--mode", default="exact", choices=list(MODES))
    engine.add_argument(
        "--layout",
        default="rows",
        choices=list(LAYOUTS),
        help="how the runtime lays the kept tokens out for the LLM (rows: + image_newline)",
    )
    engine.add_argument(
        "--target",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="what the LLM is built for: cpu, or cuda (desktop GPUs, Jetson); auto = cuda with onnxruntime-gpu",
    )
    engine.add_argument(
        "--max-crops", type=POSITIVE, help="largest crop count the engine accepts (default: the model's)"
    )
    engine.add_argument("--max-text", type=MAX_TEXT, default=256, help="longest text after the image, in tokens")
    engine.add_argument("--resolution", type=RESOLUTION, help="Qwen2.5-VL: the bundle's fixed image size WIDTHxHEIGHT, "
                        "multiples of 28 (default: what the processor gives a 640x480 camera, 644x476)")
    engine.add_argument("--calib-data", type=Path, help="int8: images folder or JSONL (default: the shipped set)")
    engine.add_argument("--allow-degraded", action="store_true", help="int8: keep a graph with held-out recall < 0.9")
    engine.add_argument(
        "--out",
        type=Path,
        help="bundle directory: a new path, an empty folder or an existing bundle (default engines/<model>-k<keep>-"
        "<precision>-<target>)",
    )
    engine.add_argument("--force", action="store_true", help="replace an existing bundle (else reused if up to date)")
    engine.add_argument("--quiet", action="store_true", help="no progress output")
    engine.set_defaults(func=cmd_engine)

    bench = sub.add_parser("bench", help="time each stage side by side at real shapes: adafv vs transformers")
    bench.add_argument(
        "--shapes",
        default=None,
        choices=list(SHAPES),
        help="random weights at these shapes (default: llava-next-7b on cuda, llava-next-1b on cpu; Qwen2.5-VL: "
        "qwen2.5-vl-0.5b on cpu, qwen2.5-vl-3b/7b on cuda)",
    )
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    bench.add_argument("--quick", action="store_true", help="tiny shapes, one repeat: checks the structure (CI)")
    bench.add_argument("--repeats", type=POSITIVE, default=3)
    bench.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="the vision graph's precision (default: "
                       "fp16 on cuda; int8 on a CPU with integer dot products, else fp32)")
    bench.add_argument("--resolution", type=RESOLUTION, help="Qwen shapes: the bundle's image size WIDTHxHEIGHT "
                       "(default 644x476, a VGA frame; 1288x728 for 720p)")
    bench.add_argument("--headline", action="store_true", help="only the headline, when time is short: time to "
                       "first token at the smallest keep end to end, decode, the first request, the vision graph's "
                       "profile, and transformers with every token")  # fmt: skip
    bench.add_argument("--dry-run", action="store_true", help="build nothing: the stages, whether each is cached, "
                       "exact parameter counts and each artifact's size (to fit a machine or a GPU host's window)")
    bench.add_argument("--out", type=Path, help="where bench.json/.md/.png go (default bench/<shapes>-<device>)")
    bench.add_argument("--quiet", action="store_true")
    bench.set_defaults(func=cmd_bench)

    ev = sub.add_parser("eval", help="VQA accuracy under token reduction (a bundle, or a model's reference path)")
    ev.add_argument("--model", required=True, help="registered name, checkpoint directory, or bundle directory")
    ev.add_argument("--data", required=True, type=Path, help="JSONL: image, question, answer (+ label for POPE)")
    ev.add_argument("--method", type=_csv(str, "methods"), default=["adafv"],
                    help="e.g. adafv,fastervlm,dart; options after colons: adafv:paper, fastervlm:compact")
    ev.add_argument("--keep", type=_csv(_keep, "keeps (counts, or shares like 10%)"), default=[64],
                    help="counts (64,144,288) or shares of each image's visual tokens (50%%,10%%)")
    ev.add_argument("--out", type=Path,
                    help="a folder: results and resumable answers (default eval-results/<data name>/<model name>)")
    ev.add_argument("--max-new-tokens", type=POSITIVE, default=16)
    ev.add_argument("--suffix", default=None, help="appended to each question (default: LLaVA's single-word prompt)")
    ev.add_argument("--limit", type=POSITIVE, help="only the first N questions")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=cmd_eval)

    conv = sub.add_parser("convert", help="a public VQA benchmark's files -> adafv eval's JSONL")
    conv.add_argument("format", choices=["gqa", "pope", "textvqa"])
    conv.add_argument("source", type=Path, help="testdev_balanced_questions.json | a POPE .json(l) | TextVQA val")
    conv.add_argument("--images", required=True, type=Path, help="the folder holding the benchmark's images")
    conv.add_argument("--out", required=True, type=Path, help="a new .jsonl file (an existing one only with --force)")
    conv.add_argument("--force", action="store_true", help="replace an existing --out (never the source)")
    conv.set_defaults(func=cmd_convert)

    calib = sub.add_parser("calib", help="reduced-precision vision graphs: the report that they keep the same tokens")
    calib_sub = calib.add_subparsers(dest="calib_command", required=True, parser_class=_Parser)
    report = calib_sub.add_parser("report", help="kept-position overlap, cosine, answers, speed and size vs fp32")
    report.add_argument("bundle", help="a bundle built with --precision int8 or fp16")
    report.add_argument("--reference", help="compare with another bundle's fp32 graph (default: this bundle's own)")
    report.add_argument("--data", type=Path, help="images folder or JSONL: its heldout split (default: shipped)")
    report.add_argument("--repeats", type=POSITIVE, default=3)
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_calib)

    ros = sub.add_parser("ros", help="a ROS 2 node: questions about the latest camera frame, answered by a bundle")
    ros.add_argument("bundle", nargs="?", help="the bundle folder (or --ros-args -p bundle:=FOLDER)")
    ros.add_argument("--ros-args", nargs=argparse.REMAINDER, default=[], dest="ros_args",
                     help="ROS arguments, e.g. -p image_topic:=/camera/image_raw -r __ns:=/robot (docs/ros.md)")
    ros.add_argument("--fastdds-profile", action="store_true",
                     help="print the path of the Fast DDS profile a camera process needs for frames over 512 KB "
                          "(FASTDDS_DEFAULT_PROFILES_FILE; docs/ros.md) and exit")  # fmt: skip
    ros.set_defaults(func=cmd_ros)

    srv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server over a bundle (loopback by default)")
    srv.add_argument("bundle")
    srv.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    srv.add_argument("--port", type=PORT, default=8000)
    srv.add_argument("--max-image-pixels", type=PIXELS, default=None,
                     help="the largest image a request may send, width x height (default 4096x4096 = 16.8 M)")
    srv.add_argument("--api-key", default=None,
                     help="require Authorization: Bearer KEY on /v1/* (default: $ADAFV_API_KEY; empty is refused)")
    srv.add_argument("--max-queue", type=POSITIVE, default=None,
                     help="requests admitted at once (running + waiting); default 8 per replica")
    srv.add_argument("--max-tokens", type=POSITIVE, default=512, help="the largest max_tokens a request may ask")
    srv.add_argument("--allow-local-files", help="a folder whose images a request may name by path")
    srv.add_argument("--replicas", type=POSITIVE, default=None,
                     help="N model replicas on Ray Serve (one per GPU for a cuda bundle) behind this one server")
    srv.add_argument("--ray-address", default=None, help="with --replicas: join this Ray cluster (default: start one)")
    srv.set_defaults(func=cmd_serve)

    sh = sub.add_parser("show", help="draw which patches were kept (a bundle, or methods side by side on a model)")
    sh.add_argument("model", help="bundle directory, registered name or checkpoint directory")
    sh.add_argument("--image", required=True)
    sh.add_argument("--prompt", required=True)
    sh.add_argument("--out", type=Path, default=Path("kept.png"),
                    help="a .png or .jpg (default kept.png); an existing file only if show wrote it, or with --force")
    sh.add_argument("--force", action="store_true", help="replace --out even if show did not write it")
    sh.add_argument("--methods", type=_csv(str, "methods"), default=["adafv"], help="models only: e.g. adafv,fastervlm")
    sh.add_argument("--keep", type=POSITIVE, help="models only (default: a tenth of the visual tokens)")
    sh.set_defaults(func=cmd_show)

    pl = sub.add_parser("plan", help="will a bundle fit a device (Jetson, GPU), and roughly how fast (estimates)")
    pl.add_argument("bundle")
    pl.add_argument("--device", required=True, help="orin-nano-8gb, orin-nx-16gb, agx-orin-32gb, agx-orin-64gb, "
                    "thor, rtx-4090, l4, h100, cpu-24gb, or all")  # fmt: skip
    pl.add_argument("--context", type=POSITIVE, help="tokens of context to budget the KV cache for")
    pl.add_argument("--crops", type=POSITIVE, help="crops per image (default: the most the engine takes)")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)

    doctor = sub.add_parser("doctor", help="what this environment can run (and a bundle: on what, and why)")
    doctor.add_argument("bundle", nargs="?", help="a bundle directory to explain")
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.set_defaults(func=cmd_doctor)

    models = sub.add_parser("models", help="list the registered models")
    models.set_defaults(func=cmd_models)

    demo = sub.add_parser("demo", help="answer a question about a toy-world scene with the shipped offline model")
    demo.add_argument("--model", default=None)
    demo.add_argument("--keep", type=POSITIVE, default=None)
    demo.set_defaults(func=cmd_demo)
    return parser


def _one_line_warnings() -> None:
    """adafv's own warnings (e.g. a bundle on a provider it was not built for) as one line on stderr."""
    import warnings

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith("adafv"):
            print(f"adafv: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    _one_line_warnings()
    from adafv.errors import AdafvError

    try:
        return args.func(args)
    except AdafvError as e:
        print(f"adafv: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a build cleans up on its way out (its partial folder, the LLM builder)
        print("adafv: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `adafv run ... --stream | head -c 1`: the reader left; end quietly, as Unix tools do
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what the shell reports for a tool the signal ended


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so the interpreter's final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("adafv")
    except metadata.PackageNotFoundError:
        import adafv

        return adafv.__version__


if __name__ == "__main__":
    sys.exit(main())
