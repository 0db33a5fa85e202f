"""The GPU path, checked without a GPU: a bundle built for `--target cuda` with an FP16 vision graph, whose decoder
takes float16, answered through the runtime on whatever provider works here (the CPU provider on CI).

Marked `gpu_env`: CI also runs these in the GPU environment (`make setup-gpu`: onnxruntime-gpu and
onnxruntime-genai-cuda), where the FP16 converter and the providers differ from the CPU packages'.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from adafv.export.checks import overlap, trt_lint
from adafv.runtime import Pipeline, load_image
from tests.conftest import photo_path

pytestmark = pytest.mark.gpu_env

IMAGES = ["astronaut.png", "rocket.jpg", "coffee.png"]


@pytest.fixture(scope="module")
def cuda_fp16(make_bundle):
    return make_bundle("tiny-llava-next", 64, precision="fp16", target="cuda")


@pytest.fixture(scope="module")
def cpu_fp32(make_bundle):
    return make_bundle("tiny-llava-next", 64, target="cpu")


def _io(path: Path) -> dict[str, int]:
    model = onnx.load(str(path), load_external_data=False)
    return {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}


def test_cuda_bundle_decoder_takes_float16_and_the_vision_graph_uint8(cuda_fp16):
    m, root = cuda_fp16.manifest, cuda_fp16.path
    assert m["target"] == "cuda" and m["providers"] == ["CUDAExecutionProvider", "TensorrtExecutionProvider"]
    io = _io(root / "llm" / m["llm"]["file"])
    f16 = onnx.TensorProto.FLOAT16
    assert io["inputs_embeds"] == f16 and io["past_key_values.0.key"] == f16 and io["logits"] == f16
    assert m["llm"]["io"] == {"inputs_embeds": "float16", "past_key_values": "float16", "logits": "float16"}
    assert m["embed"]["dtype"] == "float16"
    for name in ("vision.onnx", "vision.fp16.onnx"):
        assert _io(root / name)["pixel_values"] == onnx.TensorProto.UINT8, name
    assert m["vision"]["inputs"]["pixel_values"]["dtype"] == "uint8"


def test_fp16_graph_is_valid_half_precision_with_fp32_islands(cuda_fp16):
    """The FP16 graph loads in this environment's ONNX Runtime (the 1.31 converter's duplicate Casts merged), holds
    float16 weights, and keeps every LayerNorm and the selection math in float32."""
    import onnxruntime as ort

    path = cuda_fp16.path / "vision.fp16.onnx"
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = onnx.load(str(path))
    names = [n.name for n in model.graph.node]
    assert len(names) == len(set(names))
    weights = {t.name: t.data_type for t in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and n.input[1] in weights]
    assert len(matmuls) > 10 and {weights[n.input[1]] for n in matmuls} == {onnx.TensorProto.FLOAT16}
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input]}
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert norms and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in norms)
    report = trt_lint(path)
    assert report.ok and report.selection_nodes > 50


def test_cuda_bundle_answers_through_the_runtime_and_keeps_the_fp32_positions(cuda_fp16, cpu_fp32):
    import warnings

    from adafv.runtime.pipeline import TargetWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        half = Pipeline.load(cuda_fp16.path, warmup=False)
    on_cpu = half.decoder.provider == "CPUExecutionProvider"
    assert [w.category for w in caught] == ([TargetWarning] if on_cpu else [])
    full = Pipeline.load(cpu_fp32.path, warmup=False)
    shares = []
    for name in IMAGES:
        image = load_image(photo_path(name))
        a = half.run(image, "What is in the picture?", max_new_tokens=4)
        b = full.run(image, "What is in the picture?", max_new_tokens=4)
        assert a["num_kept"] == 64 and a["tokens"], name
        shares.append(overlap(np.array(a["kept_positions"]), np.array(b["kept_positions"])))
    assert min(shares) >= 0.9, shares
    assert half.decoder.embeds_dtype == np.float16 and half.decoder.kv_dtype == np.float16
    assert a["host_bytes_per_decode_step"] == 64 * 2 + 512 * 2  # one fp16 row of D=64 in, fp16 logits of V=512 out


def test_cli_answers_a_cuda_bundle_with_one_warning_line(cuda_fp16):
    adafv = str(Path(sys.executable).with_name("adafv"))
    proc = subprocess.run(
        [adafv, "run", str(cuda_fp16.path), "--image", str(photo_path("rocket.jpg")), "--prompt", "What is it?",
         "--max-new-tokens", "3", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    if result["providers"]["decoder"] == "CPUExecutionProvider":  # no GPU here: runs, and says so in one line
        assert proc.stderr.strip().splitlines() == [
            "adafv: warning: this bundle was built for cuda (fp16 decoder) but runs on CPUExecutionProvider: it "
            "works, slowly; for a CPU, build with --target cpu"
        ]
    assert result["target"] == "cuda" and result["num_kept"] == 64


def test_doctor_explains_the_bundle(cuda_fp16):
    adafv = str(Path(sys.executable).with_name("adafv"))
    proc = subprocess.run([adafv, "doctor", str(cuda_fp16.path), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    r = json.loads(proc.stdout)
    import onnxruntime as ort

    assert r["onnxruntime"]["version"] == ort.__version__
    assert "CPUExecutionProvider" in r["onnxruntime"]["working_providers"]
    b = r["bundle"]
    assert b["target"] == "cuda" and b["decoder_io"]["inputs_embeds"] == "float16"
    assert b["vision_engine"] == "onnxruntime" and b["decoder_providers"][0] in r["onnxruntime"]["working_providers"]
    if not r["onnxruntime"]["gpu_answers"]:
        assert "built for cuda" in b["warning"] and b["vision_file"] == "vision.onnx"
