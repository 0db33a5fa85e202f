"""The permanent table of bad input through the CLI: images, prompts, options, models, bundles, output paths. Each
case must end with exit code 2 and one line on stderr that names the problem: never a traceback."""

from __future__ import annotations

import json
import shutil

import pytest

from adafv.cli.main import main
from tests.conftest import photo_path

PHOTO = str(photo_path("astronaut.png"))


def cli(capsys, *args: str) -> tuple[int, str]:
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's own exit
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_bundle):
    """Files to break things with, made once."""
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.jpg").write_bytes(b"")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("just text")
    (root / "a-folder").mkdir()
    (root / "no-config").mkdir()
    (root / "corrupt-config").mkdir()
    (root / "corrupt-config" / "config.json").write_text("{ not json")
    (root / "no-weights").mkdir()
    from adafv import tiny

    tiny.config("tiny-llava").save_pretrained(root / "no-weights")  # a config, no weights
    (root / "other-arch").mkdir()
    (root / "other-arch" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    bundle = make_bundle("tiny-llava", 32, llm="fp32").path
    for name in ("edited", "missing-file", "bad-json", "no-plan"):
        shutil.copytree(bundle, root / name)
    from adafv.runtime import manifest as bundle_format

    manifest = bundle_format.read_manifest(root / "no-plan")
    manifest["vision"]["engines"] = []  # as built where TensorRT is absent
    bundle_format.write_manifest(root / "no-plan", manifest)
    manifest = json.loads((root / "edited" / "manifest.json").read_text())
    manifest["selection"]["keep"] = 16
    (root / "edited" / "manifest.json").write_text(json.dumps(manifest))
    (root / "missing-file" / "embed.npy").unlink()
    (root / "bad-json" / "manifest.json").write_text("{")
    (root / "half-bundle").mkdir()
    (root / "half-bundle" / "vision.onnx").write_bytes(b"")
    (root / "user-files").mkdir()
    (root / "user-files" / "thesis.tex").write_text("years of work")
    return root, bundle


def _cases():
    P = ("--prompt", "What is in the picture?")
    R = ("run", "tiny-llava", "--keep", "8", "--image", PHOTO)
    B = ("run", "{bundle}", "--image", PHOTO)
    E = ("engine", "tiny-llava", "--keep", "8", "--target", "cpu")
    return [
        # images
        ("image missing", (*B[:-1], "{root}/nope.jpg", *P), "image file not found"),
        ("image empty", (*B[:-1], "{root}/empty.jpg", *P), "empty (0 bytes)"),
        ("image corrupt", (*B[:-1], "{root}/corrupt.jpg", *P), "corrupt.jpg"),
        ("image is text", (*B[:-1], "{root}/notes.txt", *P), "not an image file"),
        ("image is a folder", (*B[:-1], "{root}/a-folder", *P), "not a file"),
        # prompts
        ("empty prompt, bundle", (*B, "--prompt", " "), "prompt is empty"),
        ("empty prompt, reference", (*R, "--prompt", ""), "prompt is empty"),
        ("placeholder in prompt, bundle", (*B, "--prompt", "<image>"), "image placeholder"),
        ("placeholder in prompt, reference", (*R, "--prompt", "<image>"), "image placeholder"),
        ("prompt too long", (*B, "--prompt", "describe the picture " * 150), "too long"),
        # options
        ("temperature -1", (*B, *P, "--temperature", "-1"), "--temperature: must be a number >= 0"),
        ("temperature nan", (*B, *P, "--temperature", "nan"), "--temperature: must be a number >= 0"),
        ("top-p 0", (*B, *P, "--top-p", "0"), "--top-p: must be a number in (0, 1]"),
        ("top-p nan", (*B, *P, "--top-p", "nan"), "--top-p: must be a number in (0, 1]"),
        ("top-p 2", (*B, *P, "--top-p", "2"), "--top-p: must be a number in (0, 1]"),
        ("seed -1", (*B, *P, "--seed", "-1"), "--seed: must be an integer >= 0"),
        ("max-new-tokens 0", (*B, *P, "--max-new-tokens", "0"), "--max-new-tokens: must be an integer >= 1"),
        ("max-new-tokens text", (*B, *P, "--max-new-tokens", "many"), "must be an integer >= 1, got 'many'"),
        ("keep 0", ("run", "tiny-llava", "--keep", "0", "--image", PHOTO, *P), "--keep: must be an integer >= 1"),
        ("keep missing", ("run", "tiny-llava", "--image", PHOTO, *P), "--keep is required"),
        ("legacy offset, exact", (*R, *P, "--legacy-offset"), "mode='paper'"),
        ("unknown method", (*R, *P, "--method", "magic"), "invalid choice: 'magic'"),
        ("bench repeats 0", ("bench", "--repeats", "0"), "--repeats: must be an integer >= 1"),
        ("demo keep 0", ("demo", "--keep", "0"), "--keep: must be an integer >= 1"),
        ("engine keep 0", ("engine", "tiny-llava", "--keep", "0"), "--keep: must be an integer >= 1"),
        ("engine keep too large", ("engine", "tiny-llava", "--keep", "64"), "not smaller than the visual tokens"),
        ("engine max-text 0", (*E, "--max-text", "0"), "--max-text: must be an integer in 1..8192"),
        ("engine max-crops 0", (*E, "--max-crops", "0"), "--max-crops: must be an integer >= 1"),
        (
            "engine int8 without its data",
            (*E, "--precision", "int8", "--calib-data", "/no/such"),
            "calibration data not found",
        ),
        ("engine target tpu", (*E, "--target", "tpu"), "invalid choice: 'tpu'"),
        ("engine random", (*E, "--method", "random"), "invalid choice: 'random'"),
        # models
        ("unknown model", ("run", "llava-9", "--keep", "8", "--image", PHOTO, *P), "unknown model 'llava-9'"),
        ("folder without config", ("run", "{root}/no-config", "--keep", "8", "--image", PHOTO, *P), "without config"),
        ("corrupt config", ("run", "{root}/corrupt-config", "--keep", "8", "--image", PHOTO, *P), "not a readable"),
        ("config, no weights", ("run", "{root}/no-weights", "--keep", "8", "--image", PHOTO, *P), "cannot load"),
        ("another architecture", ("run", "{root}/other-arch", "--keep", "8", "--image", PHOTO, *P), "'bert'"),
        ("engine from a corrupt config", ("engine", "{root}/corrupt-config", "--keep", "8"), "not a readable"),
        # bundles
        ("bundle for another keep", (*B, *P, "--keep", "16"), "built for keep=32, not keep=16"),
        ("bundle manifest edited", ("run", "{root}/edited", "--image", PHOTO, *P), "edited or damaged"),
        ("bundle file missing", ("run", "{root}/missing-file", "--image", PHOTO, *P), "embed.npy is missing"),
        ("bundle manifest corrupt", ("run", "{root}/bad-json", "--image", PHOTO, *P), "is corrupt"),
        ("bundle without manifest", ("run", "{root}/half-bundle", "--image", PHOTO, *P), "looks like a bundle"),
        (
            "tensorrt engine absent",
            ("run", "{root}/no-plan", "--image", PHOTO, *P, "--engine", "tensorrt"),
            "no TensorRT",
        ),
        # output paths
        ("out is a user folder", (*E, "--out", "{root}/user-files"), "not an adafv bundle"),
        ("out is a file", (*E, "--out", "{root}/notes.txt"), "is an existing file"),
        ("out is the engines parent", (*E, "--out", "{root}"), "not an adafv bundle"),
        ("out is a bundle of other settings", (*E, "--out", "{bundle}"), "built from other settings"),
        ("show out is the input", ("show", "{bundle}", "--image", PHOTO, *P, "--out", PHOTO), "own input"),
        ("show out is a user file", ("show", "{bundle}", "--image", PHOTO, *P, "--out", "{root}/empty.jpg"),
         "was not written by adafv show"),  # fmt: skip
        ("show out is a text file", ("show", "{bundle}", "--image", PHOTO, *P, "--out", "{root}/notes.txt"),
         "writes .png"),  # fmt: skip
        ("convert out is the source", ("convert", "pope", "{root}/notes.txt", "--images", "{root}", "--out",
                                       "{root}/notes.txt"), "writes .jsonl"),  # fmt: skip
        # serving
        ("serve with an empty key", ("serve", "{bundle}", "--api-key", ""), "--api-key is empty"),
        ("serve on port 70000", ("serve", "{bundle}", "--port", "70000"), "must be a port number"),
        ("serve a missing folder", ("serve", "{bundle}", "--allow-local-files", "{root}/nope"), "no such folder"),
        # bundles asked for what they were not built with
        ("bundle asked another method", (*B, *P, "--method", "fastervlm"), "built with method adafv"),
        ("bundle asked a dtype", (*B, *P, "--dtype", "float16"), "--dtype applies to models"),
    ]


@pytest.mark.parametrize("name, args, message", _cases(), ids=[c[0] for c in _cases()])
def test_bad_input_is_one_line_with_exit_code_2(capsys, world, name, args, message):
    root, bundle = world
    args = [a.replace("{root}", str(root)).replace("{bundle}", str(bundle)) for a in args]
    code, err = cli(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (name, err)
    assert len(lines) == 1 and lines[0].startswith("adafv"), (name, err)
    assert "Traceback" not in err and message in lines[0], (name, err)
    if name == "out is a user folder":
        assert (root / "user-files" / "thesis.tex").read_text() == "years of work"


def test_ctrl_c_is_exit_code_130(capsys, monkeypatch):
    import adafv.cli.main as cli_main

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "cmd_models", interrupted)
    code, err = cli(capsys, "models")
    assert code == 130 and err.strip() == "adafv: interrupted"
