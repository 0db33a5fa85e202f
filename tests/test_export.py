"""adafv.export: bundles of the tiny twins, parity with the reference path, TensorRT lint, atomicity, bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from adafv import AdaFVConfig, ConfigError, ModelError
from adafv.export.bundle import BuildError, EngineConfig, build
from adafv.export.checks import ParityCase, ParityError, check_parity, trt_lint
from adafv.runtime import manifest as bundle_format

PROMPTS = ["What is in the picture?", "Where is the rocket? Answer in one word."]


def trt_here() -> bool:
    """Whether TensorRT imports and a GPU answers: only then does a build write a plan."""
    from adafv.export.trt import TensorRTUnavailable, compute_capability, tensorrt_version

    try:
        tensorrt_version(), compute_capability()
    except TensorRTUnavailable:
        return False
    return True


@pytest.fixture(scope="module")
def next_bundle(make_bundle):
    return make_bundle("tiny-llava-next", 64)


@pytest.fixture(scope="module")
def llava_bundle(make_bundle):
    return make_bundle("tiny-llava", 32, mode="paper", precision="fp16", llm="fp32")


def test_bundle_layout_and_manifest(next_bundle):
    root, m = next_bundle.path, next_bundle.manifest
    for name in (
        "manifest.json",
        "build.json",
        "vision.onnx",
        "embed.npy",
        "llm/model.onnx",
        "tokenizer/tokenizer.json",
    ):
        assert (root / name).is_file(), name
    assert m["selection"]["keep"] == 64 and m["selection"]["mode"] == "exact"
    assert m["vision"]["crops"] == [3, 5] and m["vision"]["outputs"]["kept_tokens"]["shape"] == [64, 64]
    assert m["vision"]["opset"] >= 17 and m["llm"]["precision"] == "int4"
    assert m["embed"]["dtype"] == "float16" and np.load(root / "embed.npy").dtype == np.float16
    assert m["prompt"]["before"].startswith("USER:") and m["prompt"]["after"] == " ASSISTANT:"
    assert m["preprocess"]["kind"] == "anyres"
    assert m["parity"]["fp32"]["cases"] >= 5  # the probes ran (their verdict is the build's: it fails otherwise)
    if trt_here():
        assert m["vision"]["engines"] and m["vision"]["tensorrt"].startswith("built with TensorRT")
    else:  # no TensorRT (CI machines): said, not hidden
        assert "not built" in m["vision"]["tensorrt"] and m["vision"]["engines"] == []
    assert json.loads((root / "build.json").read_text())["selection"]["keep"] == 64
    bundle_format.verify_files(root, bundle_format.read_manifest(root))  # sizes and hashes


def test_graph_shapes_are_dynamic_in_crops_and_text_and_static_out(next_bundle):
    model = onnx.load(str(next_bundle.path / "vision.onnx"), load_external_data=False)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    assert dims["pixel_values"][0] == "crops" and dims["text_embeds"][0] == "text" and dims["image_grid"] == [2]
    out = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output}
    assert out == {"kept_tokens": [64, 64], "kept_order": [64]}


def _graph_inputs(reference, image, prompt, anyres, spec):
    from adafv.runtime.preprocess import preprocess

    prepared = reference.prepare(image, prompt)
    pixels, grid = preprocess(image, spec)  # uint8: the graph normalises
    assert grid == tuple(prepared.grid)
    feeds = {"pixel_values": pixels, "text_embeds": reference.embed(prepared.post_ids).detach().numpy()}
    if anyres:
        feeds["image_grid"] = np.array(prepared.grid, dtype=np.int64)
    return feeds


@pytest.mark.parametrize("which", ["next", "llava"])
def test_exported_graph_keeps_what_the_reference_path_keeps(which, request, photos):
    import onnxruntime as ort

    from adafv.pipeline import Reference

    bundle = request.getfixturevalue(f"{which}_bundle")
    m = bundle.manifest
    reference = Reference.load(m["model"]["name"])
    config = AdaFVConfig.from_dict(m["selection"])
    session = ort.InferenceSession(str(bundle.path / "vision.onnx"), providers=["CPUExecutionProvider"])
    for name in ("astronaut.png", "chelsea.png", "rocket.jpg"):
        for prompt in PROMPTS:
            feeds = _graph_inputs(reference, photos[name], prompt, which == "next", m["preprocess"])
            tokens, positions = session.run(None, feeds)
            result = reference.run(photos[name], prompt, config, max_new_tokens=1)
            kept = sorted(p for p in positions.tolist() if p >= 0)
            assert kept == result["kept_positions"], (name, prompt)
            if config.mode == "paper":  # padding: exactly keep - V rows, position -1 and a zero token
                pad = positions < 0
                assert pad.sum() == config.keep - len(kept) and not tokens[pad].any()


@pytest.mark.parametrize("which", ["next", "llava"])
def test_flat_images_keep_identical_positions(which, request):
    """A black camera frame, solid white, grey, one colour: the scores tie everywhere. Ties are broken by position,
    lowest first, in PyTorch and in ONNX Runtime alike, so the bundle keeps exactly what the reference keeps."""
    import onnxruntime as ort
    from PIL import Image

    from adafv.pipeline import Reference

    bundle = request.getfixturevalue(f"{which}_bundle")
    m = bundle.manifest
    reference = Reference.load(m["model"]["name"])
    config = AdaFVConfig.from_dict(m["selection"])
    session = ort.InferenceSession(str(bundle.path / "vision.onnx"), providers=["CPUExecutionProvider"])
    for colour in [(0, 0, 0), (255, 255, 255), (128, 128, 128), (200, 30, 30)]:
        for size in [(640, 480), (300, 900)]:
            image = Image.new("RGB", size, colour)
            feeds = _graph_inputs(reference, image, PROMPTS[0], which == "next", m["preprocess"])
            _, positions = session.run(None, feeds)
            want = reference.run(image, PROMPTS[0], config, max_new_tokens=1)["kept_positions"]
            assert sorted(p for p in positions.tolist() if p >= 0) == want, (colour, size)


def test_fp16_variant_keeps_selection_in_fp32(llava_bundle):
    m = llava_bundle.manifest
    assert m["vision"]["files"]["fp16"] == "vision.fp16.onnx"
    report = trt_lint(llava_bundle.path / "vision.fp16.onnx")
    assert report.ok and report.selection_nodes > 50
    assert m["parity"]["fp16"]["min_position_overlap"] >= 0.9
    assert m["embed"]["dtype"] == "float32" and m["llm"]["precision"] == "fp32"


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a build gets as far as loading weights: refusals must come before any work."""
    import adafv.export.bundle as bundle

    def forbidden(*args, **kwargs):
        raise AssertionError("the build loaded the model: it should have stopped before any work")

    monkeypatch.setattr(bundle, "load", forbidden)


def test_existing_bundle_is_reused_without_loading_the_model(next_bundle, no_work):
    config = EngineConfig("tiny-llava-next", AdaFVConfig(keep=64), target="cpu")
    again = build(config, out=next_bundle.path, progress=False)
    assert again.reused and again.manifest["build_key"] == next_bundle.manifest["build_key"]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["user folder", "engines parent", "file", "symlink", "current directory"])
def test_out_that_is_not_a_bundle_is_refused_and_left_intact(tmp_path, monkeypatch, no_work, next_bundle, case):
    """A build replaces its target: aimed at anything but a new path, an empty folder or a bundle, it refuses
    before any work and deletes nothing."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("my notes")
    (home / "photos").mkdir()
    (home / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 cat")
    if case == "user folder":
        out, message = home, "existing folder that is not an adafv bundle \\(2 entries: notes.txt, photos\\)"
    elif case == "engines parent":  # the folder that holds bundles is not a bundle itself
        import shutil

        shutil.copytree(next_bundle.path, home / "tiny-k64")
        out, message = home, "not an adafv bundle \\(3 entries"
    elif case == "file":
        out, message = home / "notes.txt", "is an existing file, not a bundle folder"
    elif case == "symlink":
        out, message = tmp_path / "link", "symbolic link"
        out.symlink_to(home)
    else:
        monkeypatch.chdir(home)
        out, message = Path("."), "current directory"
    before = _tree(home)
    with pytest.raises(BuildError, match=message):
        build(EngineConfig("tiny-llava", AdaFVConfig(keep=8)), out=out, progress=False)
    assert _tree(home) == before
    assert not [p for p in (tmp_path.iterdir()) if p.name.startswith(".")]  # no partial folder either


def test_a_bundle_is_replaced_only_with_force(next_bundle, tmp_path, no_work):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(next_bundle.path, copy)
    with pytest.raises(BuildError, match="built from other settings.*--force"):  # keep 48 over a keep-64 bundle
        build(EngineConfig("tiny-llava-next", AdaFVConfig(keep=48), target="cpu"), out=copy, progress=False)
    embed = copy / "embed.npy"
    raw = bytearray(embed.read_bytes())
    raw[-1] ^= 0xFF
    embed.write_bytes(bytes(raw))
    with pytest.raises(BuildError, match="embed.npy is corrupt.*--force"):  # "up to date" only when files check out
        build(EngineConfig("tiny-llava-next", AdaFVConfig(keep=64), target="cpu"), out=copy, progress=False)
    assert embed.read_bytes() == bytes(raw)


def test_force_rebuilds_into_an_existing_bundle_and_an_empty_folder(tmp_path):
    config = EngineConfig("tiny-llava", AdaFVConfig(keep=8))
    empty = tmp_path / "empty"
    empty.mkdir()
    first = build(config, out=empty, progress=False)
    assert not first.reused and (empty / "manifest.json").is_file()
    (empty / "stale-marker").write_text("x")  # not part of the bundle: gone after a forced rebuild
    again = build(config, out=empty, force=True, progress=False)
    assert not again.reused and not (empty / "stale-marker").exists()
    bundle_format.verify_files(empty, bundle_format.read_manifest(empty))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no partial or old folder left beside it


# ---- the TensorRT lint, on graphs built to break each rule ------------------------------------------------------


def _save(tmp_path, nodes, inputs, outputs, initializers=(), name="g.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_lint_rejects_what_tensorrt_rejects(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4096])
    xi = helper.make_tensor_value_info("xi", TensorProto.INT64, [8])
    vals = helper.make_tensor_value_info("v", TensorProto.FLOAT, [3900])
    idx = helper.make_tensor_value_info("i", TensorProto.INT64, [3900])
    big_k = helper.make_tensor("k", TensorProto.INT64, [1], [3900])
    path = _save(tmp_path, [helper.make_node("TopK", ["x", "k"], ["v", "i"], sorted=0)], [x], [vals, idx], [big_k])
    problems = " | ".join(trt_lint(path).problems)
    assert "K=3900" in problems and "sorted=0" in problems

    nz = helper.make_tensor_value_info("nz", TensorProto.INT64, [1, None])
    path = _save(tmp_path, [helper.make_node("NonZero", ["x"], ["nz"])], [x], [nz], name="nz.onnx")
    assert any("data-dependent" in p for p in trt_lint(path).problems)

    lo = helper.make_tensor("lo", TensorProto.INT64, [], [0])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [8])
    path = _save(tmp_path, [helper.make_node("Clip", ["xi", "lo"], ["y"])], [xi], [y], [lo], name="clip.onnx")
    assert any("Clip on i64" in p for p in trt_lint(path).problems)

    kk = helper.make_tensor_value_info("kk", TensorProto.INT64, [1])
    v2 = helper.make_tensor_value_info("v2", TensorProto.FLOAT, [None])
    i2 = helper.make_tensor_value_info("i2", TensorProto.INT64, [None])
    path = _save(tmp_path, [helper.make_node("TopK", ["x", "kk"], ["v2", "i2"])], [x, kk], [v2, i2], name="k.onnx")
    problems = trt_lint(path).problems
    assert any("must be a constant" in p for p in problems) and any("non-static shape" in p for p in problems)


def test_lint_catches_selection_math_in_fp16(next_bundle, tmp_path):
    """The same conversion with nothing kept in FP32: a valid graph (it type-checks and runs), and the lint must
    name the selection ops that left float32. The shipped FP16 graph, converted with the selection kept, passes."""
    import onnxruntime as ort

    from adafv.calib.fp16 import to_fp16

    to_fp16(next_bundle.path / "vision.onnx", tmp_path / "all16.onnx", keep32=[])
    ort.InferenceSession(str(tmp_path / "all16.onnx"), providers=["CPUExecutionProvider"])
    problems = trt_lint(tmp_path / "all16.onnx").problems
    flagged = [p for p in problems if "runs in f16, not float32" in p]
    assert len(flagged) >= 5 and len(flagged) == len(problems), problems
    assert {p.split(": selection op ")[1].split()[0] for p in flagged} >= {"Softmax", "Div"}  # TopK, CumSum: the
    # converter keeps those in float32 by itself
    to_fp16(next_bundle.path / "vision.onnx", tmp_path / "mixed.onnx")
    assert trt_lint(tmp_path / "mixed.onnx").problems == []


def test_parity_error_lists_each_difference():
    class Fake:
        def run(self, names, feeds):
            return np.zeros((4, 2), np.float32), np.array([0, 1, 2, 5])

    case = ParityCase("probe", {}, (np.full((4, 2), 0.5, np.float32), np.array([0, 1, 2, 3])))
    with pytest.raises(ParityError, match=r"probe: kept_order differ \(75% shared\); kept_tokens max \|diff\| 0.5"):
        check_parity(Fake(), [case])


# ---- bad input and atomicity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(model="llava-9", keep=8), ModelError, "unknown model 'llava-9'.*tiny-llava-next"),
        (dict(model="tiny-llava-next", keep=192), ConfigError, "smallest image.*3 crop.*192"),
        (dict(model="tiny-llava", keep=64), ConfigError, "not smaller than the visual tokens"),
        (dict(model="tiny-llava-next", keep=3840), ConfigError, "TopK needs K < 3840"),
        (dict(model="tiny-llava-next", keep=8, precision="int8", calib_data="/no/such"), ConfigError, "calibration"),
        (dict(model="tiny-llava-next", keep=8, method="random"), ConfigError, "cannot be compiled"),
    ],
)
def test_bad_requests_fail_before_any_work(tmp_path, kwargs, error, message):
    start = time.perf_counter()
    with pytest.raises(error, match=message):
        method = kwargs.pop("method", "adafv")
        selection = AdaFVConfig(keep=kwargs.pop("keep"), method=method)
        build(EngineConfig(selection=selection, **kwargs), out=tmp_path / "b", progress=False)
    assert time.perf_counter() - start < 10 and not (tmp_path / "b").exists()


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    with pytest.raises(BuildError, match="cannot create the output directory"):
        build(EngineConfig("tiny-llava", AdaFVConfig(keep=8)), out=blocker / "sub" / "b", progress=False)


def test_interrupted_build_leaves_nothing_that_loads(tmp_path, monkeypatch):
    import adafv.export.llm as llm

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(llm, "export_llm", interrupted)
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        build(EngineConfig("tiny-llava", AdaFVConfig(keep=8)), out=out, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    from adafv.runtime import BundleError

    with pytest.raises(BundleError, match="not found"):
        bundle_format.read_manifest(out)


def test_tensorrt_engine(next_bundle):
    from adafv.export.trt import TensorRTUnavailable, compute_capability, tensorrt_version

    try:
        version, sm = tensorrt_version(), compute_capability()
    except TensorRTUnavailable as e:
        pytest.skip(f"TensorRT/GPU not available here: {e}")
    engines = next_bundle.manifest["vision"]["engines"]
    assert engines and engines[0]["file"] == f"vision.{version}-sm{sm}.plan"
    assert engines[0]["parity"]["min_position_overlap"] >= 0.95


def test_cli_engine_and_make_target_are_thin(tmp_path, capsys):
    from adafv.cli.main import main

    code = main(["engine", "tiny-llava", "--keep", "16", "--out", str(tmp_path / "b"), "--quiet"])
    assert code == 0 and capsys.readouterr().out.strip() == str(tmp_path / "b")
    assert (tmp_path / "b" / "manifest.json").is_file()
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # CI runs make test
    dry = subprocess.run(["make", "-n", "--no-print-directory", "engine", "MODEL=tiny-llava", "keep=16", "TARGET=cpu"],
                         capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1])  # what make would run, not run
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip().splitlines()[-1].split() == [".venv/bin/adafv", "engine", "tiny-llava", "--keep", "16",
                                                           "--precision", "fp32", "--llm-precision", "int4",
                                                           "--target", "cpu"]  # fmt: skip


def test_probes_cover_a_real_photo_and_every_grid(next_bundle):
    probes = next_bundle.manifest["parity"]["fp32"]["probes"]
    assert any(p.startswith("rocket.jpg") for p in probes)
    assert len([p for p in probes if p.startswith("random")]) == 5  # one per pinpoint: grids 1x2 2x1 2x2 3x1 1x3


# ---- the GPU path's build side: target, fp16 conversion, decoder verification, typed one-line failures -----------


def test_default_target_follows_the_onnx_runtime_package(tmp_path):
    import onnxruntime as ort

    from adafv.export.bundle import default_out

    config = EngineConfig("tiny-llava", AdaFVConfig(keep=8))
    gpu_build = "CUDAExecutionProvider" in ort.get_available_providers()
    assert config.target == ("cuda" if gpu_build else "cpu")
    assert default_out(config) == Path("engines") / f"tiny-llava-k8-fp32-{config.target}"
    with pytest.raises(ConfigError, match="unknown target 'tpu'"):
        EngineConfig("tiny-llava", AdaFVConfig(keep=8), target="tpu")


def test_dedupe_merges_the_converters_repeated_casts(tmp_path):
    """onnxruntime-gpu 1.31's float16 converter emits one Cast per consumer of a shared tensor, all with the same
    name and output: ONNX Runtime refuses such a graph. The merge makes it load and compute the same."""
    import onnxruntime as ort

    from adafv.calib.fp16 import dedupe_casts

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    cast = dict(inputs=["x"], outputs=["x_cast_to_fp32"], to=TensorProto.FLOAT, name="x_cast_to_fp32_node")
    nodes = [
        helper.make_node("Cast", **cast),
        helper.make_node("Relu", ["x_cast_to_fp32"], ["a"], name="relu"),
        helper.make_node("Cast", **cast),  # the duplicate, as 1.31 writes it
        helper.make_node("Neg", ["x_cast_to_fp32"], ["b"], name="neg"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    with pytest.raises(Exception, match="two nodes with same node name|Duplicate definition"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert dedupe_casts(model) == 1 and len(model.graph.node) == 4
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    value = np.array([1, -2, 3, -4], np.float16)
    assert np.array_equal(session.run(None, {"x": value})[0], np.maximum(value, 0) - value.astype(np.float32))


def test_lint_allows_uint8_only_into_a_cast_to_float(tmp_path):
    u8 = helper.make_tensor_value_info("p", TensorProto.UINT8, [2, 3])
    shape = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    path = _save(tmp_path, [helper.make_node("Shape", ["p"], ["s"], name="shape")], [u8], [shape], name="s.onnx")
    assert any("Shape on u8" in p for p in trt_lint(path).problems)
    out = helper.make_tensor_value_info("i", TensorProto.INT64, [2, 3])
    node = helper.make_node("Cast", ["p"], ["i"], to=TensorProto.INT64, name="cast")
    path = _save(tmp_path, [node], [u8], [out], name="c.onnx")
    assert any("Cast from u8 to i64" in p for p in trt_lint(path).problems)
    f = helper.make_tensor_value_info("f", TensorProto.FLOAT, [2, 3])
    node = helper.make_node("Cast", ["p"], ["f"], to=TensorProto.FLOAT, name="cast")
    assert trt_lint(_save(tmp_path, [node], [u8], [f], name="ok.onnx")).problems == []


def test_polygraphy_runs_from_this_interpreter_and_its_absence_is_one_line(tmp_path, monkeypatch, next_bundle):
    import importlib.util

    from adafv.export.checks import LintError, polygraphy_lint

    monkeypatch.setenv("PATH", str(tmp_path))  # no console script anywhere on the PATH
    ok, report = polygraphy_lint(next_bundle.path / "vision.onnx")
    assert ok, report
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "polygraphy" else real(name, *a))
    with pytest.raises(LintError, match="polygraphy is not installed: pip install polygraphy"):
        polygraphy_lint(next_bundle.path / "vision.onnx")


def test_polygraphy_lints_a_graph_over_2_gb_without_its_weights(monkeypatch, next_bundle):
    """Above protobuf's 2 GB (the real Qwen2.5-VL tower: 2.7 GB) polygraphy cannot serialize the loaded model: its
    lint is not run, and says why (trt_lint and parity still run). The limit is lowered so a tiny graph takes that
    path; polygraphy itself is never started."""
    from adafv.export import checks

    calls = []
    monkeypatch.setattr(checks, "PROTOBUF_LIMIT", 0)
    monkeypatch.setattr(checks.subprocess, "run", lambda argv, **kw: calls.append(argv))
    ok, report = checks.polygraphy_lint(next_bundle.path / "vision.onnx")
    assert ok and report.startswith("not run: vision.onnx holds") and "over protobuf's 2 GB" in report
    assert calls == []


def test_a_model_onnx_runtime_cannot_run_fails_the_build_in_one_line(tmp_path):
    """A user's checkpoint whose LLM has head size 24: the builder writes it, ONNX Runtime's GroupQueryAttention
    cannot run it. The build must say so and leave nothing behind, not succeed and fail at every run."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from adafv import tiny

    _, processor = tiny.build("tiny-llava")
    config = tiny.config("tiny-llava")
    config.text_config.hidden_size, config.text_config.num_attention_heads = 48, 2  # head size 24
    config.text_config.num_key_value_heads, config.text_config.head_dim = 2, 24
    torch.manual_seed(0)
    checkpoint = tmp_path / "ckpt"
    LlavaForConditionalGeneration(config).eval().save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    out = tmp_path / "engines" / "b"
    with pytest.raises(BuildError, match="decoder does not run in ONNX Runtime: .*head_size shall be a multiple of 16"):
        build(EngineConfig(str(checkpoint), AdaFVConfig(keep=8)), out=out, progress=False)
    assert not (tmp_path / "engines").exists() or list((tmp_path / "engines").iterdir()) == []
