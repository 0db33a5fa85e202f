"""The `adafv` command: JSON schema, errors with exit code 2, and the console script itself."""

import json
import subprocess
import sys
from pathlib import Path

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


def test_bench_measures_each_stage_side_by_side(tmp_path, monkeypatch):
    # the numbers belong to `make bench`, not to a test: this only proves the command still measures every stage
    monkeypatch.chdir(tmp_path)
    from adafv.eval.bench import run_bench

    rows, facts = run_bench("tiny-llava", 16, repeats=1)
    assert [r[0] for r in rows][:3] == ["preprocess", "vision + selection", "LLM prefill"]
    assert all(r[2] > 0 and r[4] > 0 for r in rows)
    assert facts["host_bytes_per_decode_step"] == 64 * 4 + 512 * 4  # cpu target: a float32 row in, float32 logits out
