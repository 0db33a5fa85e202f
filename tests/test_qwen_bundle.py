"""A Qwen2.5-VL bundle end to end on the tiny twin: built at a fixed resolution, its fp32 bundle answers token for
token like the PyTorch reference with the same kept cells; the decoder takes 3-D positions; images it would distort
are one line; the server, show and doctor take it; every compilable method builds (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from adafv import AdaFVConfig

RESOLUTION = (224, 308)  # (height, width): 8 x 11 merged tokens
PROMPTS = ("What is in the picture?", "Is there a red star? Answer in one word.")


def noise(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def bundle(make_bundle):
    return make_bundle("tiny-qwen2.5-vl", 16, llm="fp32", resolution=RESOLUTION)


@pytest.fixture(scope="module")
def pipe(bundle):
    from adafv.runtime import Pipeline

    return Pipeline.load(bundle.path)


@pytest.fixture(scope="module")
def reference():
    from adafv.pipeline import Reference

    return Reference.load("tiny-qwen2.5-vl")


def as_runtime_sees(pipe, image: Image.Image) -> Image.Image:
    """The image at the bundle's resolution (what the reference must see to compare)."""
    from adafv.runtime.preprocess import preprocess

    return Image.fromarray(preprocess(image, pipe.manifest["preprocess"])[0][0].transpose(1, 2, 0))


def test_the_manifest_says_what_the_bundle_is(bundle, pipe):
    m = bundle.manifest
    assert m["model"]["arch"] == "qwen2_5_vl" and m["llm"]["positions"] == "mrope"
    assert m["vision"]["merged_grid"] == [8, 11] and m["vision"]["patches_per_crop"] == 88
    assert m["vision"]["inputs"]["pixel_values"]["shape"] == ["crops", 3, 224, 308]
    assert m["preprocess"]["kind"] == "qwen2vl" and m["preprocess"]["resolution"] == {"height": 224, "width": 308}
    assert m["prompt"]["image_token"] == "<|image_pad|>" and m["parity"]["fp32"]["cases"] >= 2
    names = {i.name: i.shape for i in pipe.decoder.session.get_inputs()}
    assert names["position_ids"][0] == 3  # onnxruntime-genai's Qwen2.5-VL decoder: (3, batch, sequence)


@pytest.mark.parametrize("size", [(224, 308), (450, 620), (112, 154)])
def test_fp32_bundle_answers_token_for_token_like_the_reference(pipe, reference, size):
    image = noise(*size, seed=size[0])
    for prompt in PROMPTS:
        got = pipe.run(image, prompt, max_new_tokens=12)
        want = reference.run(as_runtime_sees(pipe, image), prompt, AdaFVConfig(keep=16), max_new_tokens=12)
        assert got["kept_positions"] == want["kept_positions"] and len(got["kept_positions"]) == 16
        assert got["tokens"] == want["tokens"] and got["text"] == want["text"]
        assert got["merged_grid"] == want["merged_grid"] == [8, 11]


def test_the_photo_through_the_cli(bundle, tmp_path):
    import subprocess
    import sys

    from adafv.assets import path

    photo = tmp_path / "photo.png"
    Image.open(path("rocket.jpg")).convert("RGB").resize((616, 448)).save(photo)
    out = subprocess.run([sys.executable, "-m", "adafv.cli.main", "run", str(bundle.path), "--image", str(photo),
                          "--prompt", "What is in the picture?", "--json"], capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["num_kept"] == 16 and result["num_visual_tokens"] == 88


def test_an_image_it_would_distort_is_one_line(pipe, bundle, tmp_path):
    import subprocess
    import sys

    from adafv.runtime.errors import ImageError

    with pytest.raises(ImageError, match="does not fit this bundle's 308x224"):
        pipe.run(noise(720, 1280), "What is in the picture?")
    wide = tmp_path / "wide.png"
    noise(90, 160).save(wide)
    out = subprocess.run([sys.executable, "-m", "adafv.cli.main", "run", str(bundle.path), "--image", str(wide),
                          "--prompt", "hi"], capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "--resolution" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["engine", "tiny-llava", "--keep", "8", "--resolution", "308x224"], "--resolution is for dynamic-resolution"),
        (["engine", "tiny-qwen2.5-vl", "--keep", "8", "--resolution", "300x224"], "multiples of 28"),
        (["engine", "tiny-qwen2.5-vl", "--keep", "8", "--resolution", "big"], "WIDTHxHEIGHT"),
        (["engine", "tiny-qwen2.5-vl", "--keep", "88", "--resolution", "308x224"], "nothing would be dropped"),
        (["engine", "tiny-qwen2.5-vl", "--keep", "8", "--resolution", "1400x1400"], "outside the processor's range"),
    ],
)
def test_bad_qwen_build_options_are_one_line(argv, message, tmp_path, capsys):
    from adafv.cli.main import main

    try:
        code = main([*argv, "--out", str(tmp_path / "b"), "--quiet"])
    except SystemExit as e:  # argparse's own one-line error
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_the_server_answers_like_the_runtime(pipe):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    import base64
    import io

    from fastapi.testclient import TestClient

    from adafv.assets import path
    from adafv.serve.app import Server, create_app

    buffer = io.BytesIO()
    Image.open(path("rocket.jpg")).convert("RGB").resize((616, 448)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    client = TestClient(create_app(Server(pipe, "tiny-qwen2.5-vl")))
    body = {"model": "tiny-qwen2.5-vl", "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in the picture?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    want = pipe.run(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), "What is in the picture?",
                    max_new_tokens=8)  # fmt: skip
    assert reply.json()["choices"][0]["message"]["content"] == want["text"]
    wide = io.BytesIO()
    noise(90, 160).save(wide, format="PNG")
    body["messages"][0]["content"][1]["image_url"]["url"] = "data:image/png;base64," + base64.b64encode(
        wide.getvalue()).decode()  # fmt: skip
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400 and "without distortion" in reply.json()["error"]["message"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fastervlm", "text", "dart", "divprune", "visionzip"])  # random: eager only
def test_every_compilable_method_builds_and_keeps_the_reference_cells(make_bundle, reference, method):
    from adafv.runtime import Pipeline

    built = make_bundle("tiny-qwen2.5-vl", 16, llm="fp32", resolution=RESOLUTION, method=method)
    pipe = Pipeline.load(built.path)
    image = noise(224, 308, seed=7)
    got = pipe.run(image, PROMPTS[0], max_new_tokens=6)
    want = reference.run(image, PROMPTS[0], AdaFVConfig(keep=16, method=method), max_new_tokens=6)
    assert got["kept_positions"] == want["kept_positions"]
    assert got["tokens"] == want["tokens"]


def test_bench_runs_qwen_shapes(tmp_path, monkeypatch):
    """The structure of `adafv bench --shapes tiny-qwen` (the numbers belong to the bench, not to a test)."""
    from adafv.cli.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["bench", "--shapes", "tiny-qwen", "--repeats", "1", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    r = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert r["vision"]["visual_tokens"] == 88 and set(r["prefill"]) == {"16", "32", "64", "88"}
    assert r["preprocess"][0]["size"] == "308x224" and r["preprocess"][0]["identical_pixels"] is True
    assert r["transformers"]["prompt_tokens"] > 88 and r["adafv"]["ttft_ms"] > 0
    assert "not measured for Qwen" in (tmp_path / "out" / "bench.md").read_text()
    iso = r["vision"]["selection_isolated"]  # the selection's parts timed alone
    assert iso["rounds"] >= 20 and iso["tower_ms"] == r["vision"]["without_selection_ms"]
    assert "timed alone" in (tmp_path / "out" / "bench.md").read_text()


@pytest.mark.slow
def test_bench_at_a_wide_resolution_times_a_camera_frame_of_its_aspect(tmp_path, monkeypatch):
    """A 16:9 bundle cannot take a VGA frame: its camera row is 1280x720 (the 720p run once stopped at VGA)."""
    from adafv.cli.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["bench", "--shapes", "tiny-qwen", "--resolution", "392x224", "--repeats", "1", "--out",
                 str(tmp_path / "out"), "--quiet"]) == 0  # fmt: skip
    r = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert [row["size"] for row in r["preprocess"]] == ["392x224", "1280x720", "784x448"]
    assert r["adafv"]["ttft_ms"] > 0


@pytest.mark.slow
def test_a_qwen2_vl_bundle_answers_like_its_reference(make_bundle):
    """Qwen2-VL through the build: its decoder comes from genai's Qwen2.5-VL builder (the same text decoder), and the
    fp32 bundle answers token for token like the reference with the same kept cells."""
    from adafv.pipeline import Reference
    from adafv.runtime import Pipeline

    built = make_bundle("tiny-qwen2-vl", 16, llm="fp32", resolution=RESOLUTION)
    assert built.manifest["model"]["arch"] == "qwen2_vl" and built.manifest["llm"]["positions"] == "mrope"
    assert built.manifest["vision"]["tower"] == {"width": 32, "heads": 4, "mlp": 64, "layers": 3}  # for plan
    pipe, reference = Pipeline.load(built.path), Reference.load("tiny-qwen2-vl")
    for seed, prompt in enumerate(PROMPTS):
        image = noise(224, 308, seed=20 + seed)
        got = pipe.run(image, prompt, max_new_tokens=10)
        want = reference.run(image, prompt, AdaFVConfig(keep=16), max_new_tokens=10)
        assert got["kept_positions"] == want["kept_positions"] and got["tokens"] == want["tokens"]


def test_eval_on_a_qwen_bundle_crops_other_aspects_to_its_own(bundle, pipe, tmp_path):
    """A dataset's images come in every aspect; a fixed-resolution bundle answers each as `adafv run` would for the
    largest centred crop of its own aspect (the near-fitting image as is), and the results say how many."""
    from adafv.eval.vqa import evaluate
    from adafv.runtime.preprocess import crop_to_aspect

    images = {"fits.png": noise(224, 308, 1), "near.png": noise(230, 308, 2), "square.png": noise(300, 300, 3)}
    for name, image in images.items():
        image.save(tmp_path / name)
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"image": n, "question": PROMPTS[0], "answer": "x"}) + "\n" for n in images))
    results = evaluate(bundle.path, data, ["adafv"], [16], tmp_path / "out", max_new_tokens=6, suffix="",
                       progress=False)  # fmt: skip
    assert results["fit"]["cropped_images_this_run"] == 1
    rows = [json.loads(line) for line in (tmp_path / "out" / "answers" / "adafv-k16.jsonl").read_text().splitlines()]
    rows = {row["id"]: row for row in rows[1:]}
    square = crop_to_aspect(images["square.png"], pipe.manifest["preprocess"])
    assert square.size != (300, 300)
    assert rows[3]["kept"] == pipe.run(square, PROMPTS[0], max_new_tokens=6)["kept_positions"]
    assert rows[2]["kept"] == pipe.run(images["near.png"], PROMPTS[0], max_new_tokens=6)["kept_positions"]


def test_int8_keeps_the_qwen_merger_in_fp32(bundle):
    """The merger's tokens feed the relevance cue directly: like LLaVA's projector it stays FP32 in the INT8 graph
    (quantised, the real tower's INT8 graph kept 0.86 of the FP32 positions: below the 0.9 gate)."""
    import onnx

    from adafv.calib.regions import in_projector, int8_excluded

    model = onnx.load(str(bundle.path / "vision.onnx"), load_external_data=False)
    merger = [n for n in model.graph.node if in_projector(n) and n.op_type in ("MatMul", "Gemm")]
    assert len(merger) == 2 and {n.name for n in merger} <= set(int8_excluded(model))


def test_the_saliency_blocks_attention_stays_fp32_in_every_reduced_graph(bundle):
    """Global attention is the selection's saliency: its QK^T, softmax and PV (the query blocks of the last
    full-attention block) are selection math, FP32 in the FP16 and INT8 graphs (quantised, they moved kept cells
    at real shapes)."""
    import onnx

    from adafv.calib.regions import fp32_nodes, in_selection

    model = onnx.load(str(bundle.path / "vision.onnx"), load_external_data=False)
    attention = [n for n in model.graph.node if in_selection(n) and n.op_type in ("MatMul", "Softmax")]
    # one query block at the twin's size: QK^T, its softmax, PV; plus the relevance's similarity MatMul
    assert sum(n.op_type == "Softmax" for n in attention) >= 1
    assert sum(n.op_type == "MatMul" for n in attention) >= 3
    tower = [n for n in model.graph.node if n.op_type == "MatMul" and not in_selection(n)]
    assert tower and {n.name for n in attention} <= set(fp32_nodes(model))
    assert not {n.name for n in tower} & set(fp32_nodes(model))  # the other blocks' attention is not
    # the saliency's inputs too: the saliency block's qkv projection (a (3C, C) weight, a Gemm) is in the
    # selection, as LLaVA's ClsSaliency holds q_proj and k_proj; every other block's qkv is not
    shapes = {t.name: sorted(t.dims) for t in model.graph.initializer}
    qkv = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
           and any(len(d := shapes.get(i, [])) == 2 and d[1] == 3 * d[0] for i in n.input)]  # fmt: skip
    assert len(qkv) == bundle.manifest["vision"]["tower"]["layers"] >= 2
    assert sum(in_selection(n) for n in qkv) == 1
