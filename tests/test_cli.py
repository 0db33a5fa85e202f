"""The `adafv` command: JSON schema, errors with exit code 2, and the console script itself."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adafv.cli.main import main
from tests.conftest import photo_path

PHOTO = str(photo_path("astronaut.png"))


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_json_schema(capsys):
    code, out, _ = run_cli(
        capsys,
        "run",
        "tiny-llava-next",
        "--keep",
        "64",
        "--image",
        PHOTO,
        "--prompt",
        "What is in the picture?",
        "--json",
        "--max-new-tokens",
        "5",
    )
    assert code == 0
    result = json.loads(out)
    for key in ("text", "kept_positions", "num_visual_tokens", "keep", "method", "timings_ms"):
        assert key in result
    assert result["keep"] == 64 and len(result["kept_positions"]) == 64 and result["num_visual_tokens"] == 320
    assert result["kept_positions"] == sorted(set(result["kept_positions"]))
    assert set(result["timings_ms"]) >= {"preprocess", "vision", "select", "generate", "total"}


def test_models_lists_the_registry(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "tiny-llava-next" in out and "llava-hf/llava-v1.6-mistral-7b-hf" in out


def test_console_script_runs():
    adafv = Path(sys.executable).with_name("adafv")
    proc = subprocess.run(
        [
            str(adafv),
            "run",
            "tiny-llava",
            "--keep",
            "16",
            "--image",
            PHOTO,
            "--prompt",
            "What is in the picture?",
            "--max-new-tokens",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "kept 16/64 visual tokens" in proc.stderr


def test_bench_quick_writes_every_measurement(tmp_path, monkeypatch):
    """The numbers belong to `adafv bench`, not to a test: this checks the structure of what --quick writes."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code = main(["bench", "--quick", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    r = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert r["config"]["shapes"] == "tiny" and all(row["identical_pixels"] for row in r["preprocess"])
    assert set(r["prefill"]) == {"16", "64", "144", str(r["vision"]["visual_tokens"])}
    assert r["prefill"][str(r["vision"]["visual_tokens"])]["flop_ratio"] == 1.0
    assert all(0 < p["flop_ratio"] < 1 for k, p in r["prefill"].items() if int(k) < r["vision"]["visual_tokens"])
    assert r["adafv"]["ttft_ms"] > 0 and r["transformers"]["ttft_ms"] > 0 and r["adafv"]["peak_rss_mb"] > 0
    assert r["adafv"]["host_bytes_per_decode_step"] == 64 * 4 + 512 * 4
    assert all(len(v) >= 1 for v in r["samples_ms"].values())
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "Time to first token" in md and "| 144 |" in md
    from adafv.runtime.cpu import describe, int8_pays

    facts = r["machine"]["cpu_facts"]  # the CPU every figure belongs to, with the instruction sets that matter
    assert r["machine"]["cpu"] == describe(facts) and f"Machine: {describe(facts)}" in md
    assert r["precision"]["vision"] == ("int8" if int8_pays(facts)[0] else "fp32")  # INT8 only where it pays
    steps = r["build"]["steps_s"]  # each build step's seconds, in bench.json and bench.md
    assert "export vision graph to ONNX" in steps and all(v >= 0 for v in steps.values())
    assert r["build"]["seconds"] == round(sum(steps.values()), 1) and "| export vision graph to ONNX |" in md
    p = r["profile"]  # ONNX Runtime's profiler on the graph the runtime runs, per op type
    assert p["graph"] == ("vision.int8.onnx" if int8_pays(facts)[0] else "vision.onnx")
    assert p["kernels"] > 50 and 0 < p["selection_share"] < 1 and abs(sum(p["providers_ms"].values()) -
                                                                      p["kernels_ms"]) < 0.01  # fmt: skip
    assert sum(o["ms"] for o in p["ops"]) + p["other_ops_ms"] == pytest.approx(p["kernels_ms"], abs=0.01)
    assert "ONNX Runtime's profiler" in md and r["adafv"]["first_request_ttft_ms"] == r["samples_ms"]["ttft adafv"][0]


def test_bench_headline_and_a_failed_stage(tmp_path, monkeypatch):
    """--headline measures the headline only (time to first token both ways, decode, the first request, the
    profile); a stage that fails leaves bench.json with what was measured before it and the error."""
    from adafv.eval import bench

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["bench", "--quick", "--headline", "--out", str(tmp_path / "h"), "--quiet"]) == 0
    r = json.loads((tmp_path / "h" / "bench.json").read_text())
    assert r["preprocess"] == [] and "prefill" not in r and "vision" not in r and "profile" in r
    assert r["adafv"]["ttft_ms"] > 0 and r["transformers"]["ttft_ms"] > 0 and r["adafv"]["decode_ms_per_token"] > 0
    assert "--headline" in (tmp_path / "h" / "bench.md").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("transformers ran out of GPU memory")

    monkeypatch.setattr(bench, "_transformers", broken)
    with pytest.raises(RuntimeError):
        bench.run(bench.BenchConfig(quick=True, headline=True), tmp_path / "f", progress=False)
    r = json.loads((tmp_path / "f" / "bench.json").read_text())
    assert r["error"] == "RuntimeError: transformers ran out of GPU memory"
    assert r["adafv"]["ttft_ms"] > 0 and "transformers" not in r  # the bundle's figures survive the failure


def test_show_draws_the_kept_patches(tmp_path, capsys, make_bundle):
    from PIL import Image

    photo = str(Path(__file__).resolve().parents[1] / "assets" / "rocket.jpg")
    out = tmp_path / "model.png"
    methods = "adafv,fastervlm,dart,visionzip"
    args = ["show", "tiny-llava-next", "--image", photo, "--prompt", "What?", "--methods", methods]
    assert main([*args, "--keep", "24", "--out", str(out)]) == 0
    assert "adafv kept 24, fastervlm kept 24, dart kept 24, visionzip kept 24" in capsys.readouterr().out
    sheet = Image.open(out)
    assert sheet.width > 200 and sheet.height > 4 * 256  # one row per method
    bundle = make_bundle("tiny-llava-next", 64).path
    assert main(["show", str(bundle), "--image", photo, "--prompt", "What?", "--out", str(tmp_path / "b.png")]) == 0
    assert "adafv kept 64" in capsys.readouterr().out and (tmp_path / "b.png").is_file()


def test_plan_answers_for_every_device_and_its_memory_holds_on_a_cpu_run(make_bundle, capsys):
    """The memory estimate against a measured fresh process that loads the bundle and answers (within 15%)."""
    import subprocess
    import sys

    from adafv.eval.footprint import ANSWER
    from adafv.eval.plan import DEVICES, plan

    bundle = make_bundle("toyworld-llava-next", 64, precision="int8").path
    photo = str(Path(__file__).resolve().parents[1] / "assets" / "toyworld.png")
    proc = subprocess.run(
        [sys.executable, "-c", ANSWER, str(bundle), photo], capture_output=True, text=True, check=True
    )
    measured = json.loads(proc.stdout.strip().splitlines()[-1])["rss_mb"]
    estimate = plan(bundle, "cpu-24gb")["total_mb"]
    assert abs(estimate - measured) / measured < 0.15, (estimate, measured)
    assert main(["plan", str(bundle), "--device", "all", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["device"]["name"] for r in results] == list(DEVICES)
    for r in results:
        assert r["fits"] and r["total_mb"] > 0 and (r["latency_ms"] is None) == (not r["device"]["gpu"])
    from adafv.errors import ConfigError

    most = plan(bundle, "orin-nano-8gb")["largest_context"]
    assert most == json.loads((bundle / "manifest.json").read_text())["llm"]["max_length"]  # the LLM's, not more
    with pytest.raises(ConfigError, match="holds at most"):  # a context the LLM cannot hold is refused, not planned
        plan(bundle, "orin-nano-8gb", context=10_000_000)
    with pytest.raises(ConfigError, match="takes 3..5 crops"):
        plan(bundle, "orin-nano-8gb", crops=100)


def test_a_gpu_benchs_checkpoint_is_saved_in_float16(tmp_path, monkeypatch):
    """`--device cuda` makes its random-weight checkpoint on the device in float16 (half the bytes of the CPU's
    float32), in a folder of its own; shrunk shapes stand in for the 7B here, and the CPU for the GPU."""
    import safetensors

    from adafv.eval import shapes

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(shapes.LLMS, "llava-next-1b", dict(hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=32000,
                        max_position_embeddings=512))  # fmt: skip
    monkeypatch.setattr(shapes, "CLIP_L", dict(shapes.CLIP_L, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=2))  # fmt: skip
    real = shapes._save  # the GPU's part runs on the CPU here: the device is the only thing swapped
    monkeypatch.setattr(shapes, "_save", lambda s, seed, out, device, half: real(s, seed, out, "cpu", half))
    fp32, fp16 = Path(shapes.checkpoint("llava-next-1b")), Path(shapes.checkpoint("llava-next-1b", device="cuda"))
    assert fp32.name == "llava-next-1b-seed0" and fp16.name == "llava-next-1b-seed0-cuda-fp16"
    dtypes = []
    for folder in (fp32, fp16):
        with safetensors.safe_open(str(folder / "model.safetensors"), "np") as f:
            dtypes.append({str(f.get_tensor(k).dtype) for k in f.keys()})
    assert dtypes == [{"float32"}, {"float16"}]
    assert (fp16 / "model.safetensors").stat().st_size < 0.6 * (fp32 / "model.safetensors").stat().st_size
    with pytest.raises(Exception, match="unknown device"):
        shapes.checkpoint("llava-next-1b", device="tpu")


def test_bench_dry_run_sizes_a_gpu_run_without_building(tmp_path, monkeypatch, capsys):
    """`adafv bench --dry-run` counts the parameters from the configs on the meta device (no weights) and sizes
    each artifact; the counts are the published ones of the models whose shapes these are."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["bench", "--shapes", "llava-next-7b", "--device", "cuda", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Parameters (exact, from the configs): 7.57 B" in out  # llava-v1.6-mistral-7b-hf: 7.57 B
    assert "| random-weight checkpoint | 15.13 GB | no | made on the GPU in float16 |" in out
    assert not (tmp_path / "cache" / "adafv").exists()  # nothing made
    assert main(["bench", "--shapes", "qwen2.5-vl-7b", "--device", "cuda", "--dry-run"]) == 0
    assert "8.29 B" in capsys.readouterr().out  # Qwen2.5-VL-7B-Instruct: 8.29 B
    assert main(["bench", "--quick", "--dry-run"]) == 2  # the twins are registered models: one line, exit 2
    assert "--dry-run sizes real shapes" in capsys.readouterr().err
