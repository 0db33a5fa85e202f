"""adafv.calib: the shipped data and its feeds, the INT8 Q/DQ graph, the report, and the build that checks it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from adafv import AdaFVConfig
from adafv.calib.data import feeds, items, shipped
from adafv.export.bundle import EngineConfig, build
from adafv.export.checks import trt_lint
from adafv.runtime import Pipeline
from adafv.runtime.contract import ORDER


@pytest.fixture(scope="module")
def int8_bundle(make_bundle):
    return make_bundle("toyworld-llava-next", 64, precision="int8")


def test_shipped_set_has_two_halves_of_real_and_toy_images():
    rows = [json.loads(line) for line in shipped().read_text().splitlines()]
    assert len(rows) >= 16 and {r["split"] for r in rows} == {"calibration", "heldout"}
    assert len(items(None, "calibration")) == len(items(None, "heldout")) == len(rows) // 2
    assert all(Path(it.image).is_file() for it in items(None))


def test_feeds_are_what_the_runtime_sends(int8_bundle, monkeypatch):
    """Capture what the runtime's vision session receives when it answers, and compare the calibration feeds."""
    from adafv.runtime import load_image

    pipe = Pipeline.load(int8_bundle.path, warmup=False)
    chosen = items(None, "heldout")[:3]
    sent = []
    vision = pipe._load_vision()
    real = vision.session.run
    monkeypatch.setattr(vision.session, "run", lambda names, feed: sent.append(feed) or real(names, feed),
                        raising=False)  # fmt: skip
    for item in chosen:
        pipe.run(load_image(item.image), item.question, max_new_tokens=1)
    for feed, got in zip(feeds(pipe, chosen), sent, strict=True):
        assert feed.keys() == got.keys()
        for name in feed:
            assert np.array_equal(feed[name], got[name].astype(feed[name].dtype)), name


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_int8_graph_is_qdq_with_fp32_islands(make_bundle, target):
    """cpu: U8S8 (ONNX Runtime's fast path on x86); cuda: symmetric S8S8 that passes the TensorRT lint."""
    bundle = make_bundle("toyworld-llava-next", 64, precision="int8", target=target)
    root, m = bundle.path, bundle.manifest
    assert m["vision"]["files"]["int8"] == "vision.int8.onnx"
    model = onnx.load(str(root / "vision.int8.onnx"), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    inits = {t.name: t for t in model.graph.initializer}
    int8_weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) and
                    inits[n.input[0]].data_type == onnx.TensorProto.INT8]  # fmt: skip
    assert len(int8_weights) > 10
    zero_points = [inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear"]
    want = onnx.TensorProto.UINT8 if target == "cpu" else onnx.TensorProto.INT8
    assert set(zero_points) == {want}  # activations: uint8 on the CPU, int8 for TensorRT
    report = trt_lint(root / "vision.int8.onnx")
    assert report.selection_nodes > 50
    if target == "cuda":
        assert report.ok, report.problems
    assert m["vision"]["int8"]["flavour"].startswith("U8S8" if target == "cpu" else "S8S8")
    # every Softmax reads float32, so ONNX Runtime cannot fuse it into an 8-bit QLinearSoftmax: in the file and in
    # the kernels that really run (its profiler)
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert softmax and all(producer.get(n.input[0]) != "DequantizeLinear" for n in softmax)
    assert m["vision"]["int8"]["softmax_inputs_kept_float"] >= 1  # the tower's (the selection's never had a pair)
    if target == "cpu":
        from adafv.assets import path
        from adafv.eval.profile import profile
        from adafv.runtime import load_image
        from adafv.runtime.preprocess import preprocess

        pipe = Pipeline.load(root, warmup=False)
        pixels, grid = preprocess(load_image(path("rocket.jpg")), m["preprocess"])
        feed = pipe.vision_feeds(pixels, pipe.embed(pipe.prompt_ids("What is in the picture?")[1]), grid)
        kernels = set(profile(root / "vision.int8.onnx", feed)["op_types"])
        assert "QLinearMatMul" in kernels or "MatMulIntegerToFloat" in kernels  # INT8 kernels do run
        assert not any("Softmax" in op and op != "Softmax" for op in kernels), kernels


def test_the_held_out_half_keeps_the_fp32_tokens(int8_bundle):
    """The manifest's report, recomputed here without the report's code: each held-out image through both graph
    files in plain ONNX Runtime sessions, the recall of the FP32 positions as sets."""
    import onnxruntime as ort

    c = int8_bundle.manifest["calibration"]
    pipe = Pipeline.load(int8_bundle.path, warmup=False)
    files = pipe.manifest["vision"]["files"]
    sessions = [ort.InferenceSession(str(int8_bundle.path / files[k]), providers=["CPUExecutionProvider"])
                for k in ("fp32", "int8")]  # fmt: skip
    recalls = []
    covered = items(None, "heldout")[: c["images"]]  # the build's report covers what fits its time budget, >= 4
    for feed in feeds(pipe, covered):
        p32, p8 = (set(s.run([ORDER], feed)[0].tolist()) for s in sessions)
        recalls.append(len(p32 & p8) / len(p32))
    assert c["precision"] == "int8" and 4 <= c["images"] == len(recalls) and c["heldout"] == len(items(None, "heldout"))
    assert c["mean"]["recall"] == pytest.approx(sum(recalls) / len(recalls), abs=1e-9)
    size = sum(f.stat().st_size for f in int8_bundle.path.glob("vision.int8.onnx*")) / sum(
        f.stat().st_size for f in int8_bundle.path.glob("vision.onnx*"))  # fmt: skip
    assert c["mean"]["size_ratio"] == pytest.approx(size)


def test_runtime_runs_the_int8_graph_on_the_cpu(int8_bundle):
    from adafv.assets import path
    from adafv.runtime import load_image

    pipe = Pipeline.load(int8_bundle.path, warmup=False)
    result = pipe.run(load_image(path("toyworld.png")), "What color is the small cross?", max_new_tokens=2)
    assert result["num_kept"] == 64
    assert pipe.placement.vision_file == "vision.int8.onnx"


def test_a_graph_under_the_recall_threshold_fails_unless_allowed(tmp_path, monkeypatch):
    import adafv.calib.report as report

    monkeypatch.setattr(report, "MIN_RECALL", 1.01)  # no graph can pass
    config = dict(model="tiny-llava-next", precision="int8", target="cpu", max_probes=1)
    from adafv.export.errors import BuildError

    with pytest.raises(BuildError, match="INT8 graph keeps .*mean recall < 1.01.*--allow-degraded"):
        build(EngineConfig(selection=AdaFVConfig(keep=32), **config), out=tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
    result = build(EngineConfig(selection=AdaFVConfig(keep=32), allow_degraded=True, **config), out=tmp_path / "b",
                   progress=False)  # fmt: skip
    assert result.manifest["calibration"]["mean"]["recall"] < 1.01


def test_cli_report(int8_bundle, capsys):
    from adafv.cli.main import main

    assert main(["calib", "report", str(int8_bundle.path), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "vision.int8.onnx vs vision.onnx" in out and "| **mean** |" in out


# ---- hostile input (issue 19, class 6): calibration data that does not fit is reported, never mislabelled ----------


def test_a_folder_of_images_serves_both_halves(tmp_path, int8_bundle, capsys):
    """`--data FOLDER`, the documented input, is accepted: its images alternate between the halves."""
    import shutil

    from adafv.cli.main import main

    for it in items(None, "heldout"):
        shutil.copy(it.image, tmp_path / Path(it.image).name)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [Path(it.image).name for it in items(tmp_path, "heldout")] == names[1::2]
    assert main(["calib", "report", str(int8_bundle.path), "--data", str(tmp_path), "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == len(names[1::2]) and not report["skipped"]


def test_items_the_engine_cannot_take_are_reported_and_the_rows_stay_aligned(int8_bundle):
    """Narrow the engine's crop range (as --max-crops does): the items it cannot take are skipped with their reason,
    and every row is the report of its own image and question (a row computed alone is the same row)."""
    from adafv.calib.report import CalibrationError, compare

    pipe = Pipeline.load(int8_bundle.path, warmup=False)
    files = pipe.manifest["vision"]["files"]
    chosen = items(None, "heldout")
    crops = [feed["pixel_values"].shape[0] for feed in feeds(pipe, chosen)]
    assert len(set(crops)) > 1, crops  # the shipped held-out half has images of several crop counts
    pipe.manifest["vision"]["crops"] = [min(crops), min(crops)]  # an engine that takes only the smallest
    args = (pipe, int8_bundle.path / files["int8"], int8_bundle.path / files["fp32"])
    report = compare(*args, chosen, answers=False, timed=1, min_items=1)
    kept = [c == min(crops) for c in crops]
    assert report["images"] == sum(kept) and len(report["skipped"]) == len(chosen) - sum(kept)
    assert all("crops; the vision graph takes" in s["reason"] for s in report["skipped"])
    used = [it for it, k in zip(chosen, kept) if k]
    assert [(r["image"], r["question"]) for r in report["per_image"]] == [
        (Path(it.image).name, it.question) for it in used]  # fmt: skip
    alone = compare(*args, [used[-1]], answers=False, timed=0, min_items=1)["per_image"][0]
    assert {k: alone[k] for k in ("jaccard", "recall", "cosine")} == {
        k: report["per_image"][-1][k] for k in ("jaccard", "recall", "cosine")}  # fmt: skip
    too_few = sum(kept) + 1
    with pytest.raises(CalibrationError, match=f"at least {too_few} held-out items .*got {sum(kept)} of {len(chosen)}"):
        compare(*args, chosen, answers=False, min_items=too_few)
    pipe.manifest["vision"]["crops"] = [1, 1]  # nothing fits: one line, not a StatisticsError
    with pytest.raises(CalibrationError, match=f"got 0 of {len(chosen)}"):
        compare(*args, chosen, answers=False)


def test_the_builds_report_fits_its_time_budget(int8_bundle):
    """With no time to spare the report still covers the minimum (3 items) and says how many it left out."""
    from adafv.calib.report import compare

    pipe = Pipeline.load(int8_bundle.path, warmup=False)
    files = pipe.manifest["vision"]["files"]
    chosen = items(None, "heldout")
    report = compare(pipe, int8_bundle.path / files["int8"], int8_bundle.path / files["fp32"], chosen,
                     answers=False, budget_s=0.0)  # fmt: skip
    assert report["images"] == 3 and report["heldout"] == len(chosen) > 3
    full = compare(pipe, int8_bundle.path / files["int8"], int8_bundle.path / files["fp32"], chosen, answers=False)
    assert full["images"] == len(chosen) and full["per_image"][:3] == [
        {**r, "vision_ms": full["per_image"][i]["vision_ms"], "vision_ms_fp32": full["per_image"][i]["vision_ms_fp32"]}
        for i, r in enumerate(report["per_image"])]  # fmt: skip


@pytest.mark.parametrize("content,message", [
    (b"\xff\xfe{", "is not UTF-8 text"),
    (b'{"image": "a.png"\n', "not JSON"),
    (b'["a.png"]\n', "each line is an object"),
    (b'{"question": "what?"}\n', "'image' must be a non-empty string"),
    (b'{"image": "a.png", "split": "train"}\n', "split one of"),
])  # fmt: skip
def test_calibration_and_eval_read_questions_files_alike(tmp_path, content, message):
    """One reader (adafv.datafile) for both: the same bad file is one DataError line, naming the file and line."""
    from adafv.errors import DataError
    from adafv.eval.vqa import load

    path = tmp_path / "q.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as calib_error:
        items(path)
    assert str(path) in str(calib_error.value) and "\n" not in str(calib_error.value)
    if message in ("is not UTF-8 text", "not JSON", "each line is an object"):  # file-level: the very same line
        with pytest.raises(DataError) as eval_error:
            load(path)
        assert str(eval_error.value) == str(calib_error.value).replace("{image, question, split}",
                                                                      "{image, question, answer}")  # fmt: skip


def test_a_calibration_line_with_a_bom_and_a_relative_image_reads(tmp_path):
    (tmp_path / "img").mkdir()
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"image": "img/a.png", "question": "what?", "split": "heldout"}\n\n')
    (got,) = items(path)
    assert got.image == str(tmp_path / "img" / "a.png") and got.split == "heldout" and got.question == "what?"


@pytest.mark.parametrize("full_range", [True, False])
def test_cpu_int8_weights_are_8_bit_only_for_integer_dot_products(tmp_path, full_range):
    """U8S8 for the CPU: 8-bit weights where the build's CPU has integer dot products (int32 accumulation), 7-bit
    (reduce_range) elsewhere; read from the quantised weights themselves, on a two-MatMul graph."""
    from onnx import TensorProto, helper, numpy_helper

    from adafv.calib.int8 import quantize

    rng = np.random.default_rng(0)
    w1, w2 = (numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
              for s, n in (((16, 32), "w1"), ((32, 8), "w2")))  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], [w1, w2])  # fmt: skip
    src = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(src))
    feeds = [{"x": rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(4)]
    facts = quantize(src, tmp_path / "int8.onnx", feeds, target="cpu", full_range=full_range)
    model = onnx.load(str(tmp_path / "int8.onnx"))
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TensorProto.INT8]
    weights = [w for w in weights if w.ndim == 2]  # not the (per-channel) zero points
    assert len(weights) == 2
    peak = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert peak == 127 if full_range else peak <= 64
    assert facts["weight_bits"] == (8 if full_range else 7)
    assert facts["needs_integer_dot_products"] is full_range
