"""adafv eval: answer normalisation, the scores, resumable runs on the tiny twin (reference path and bundle), the
converters, bad data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from adafv.cli.main import main
from adafv.eval.vqa import DataError, convert, keep_for, load, metrics, normalize, parse_keep, parse_method, score

ROOT = Path(__file__).resolve().parents[1]


def test_normalize_like_the_vqa_evaluation():
    assert normalize("Two.") == "2"
    assert normalize("The Red Car!") == "red car"
    assert normalize(" 3.5 ") == "3.5"
    assert normalize("Yes, it is") == "yes it is"
    assert normalize("an apple") == "apple"


def test_scores():
    assert score("Two", "2") == 1.0 and score("three", "2") == 0.0
    ten = ["cat"] * 2 + ["dog"] * 8
    assert score("cat", ten) == pytest.approx(2 / 3) and score("dog", ten) == 1.0 and score("cow", ten) == 0.0


def test_pope_metrics_by_hand():
    items = [{"id": i, "answer": lab, "label": lab} for i, lab in enumerate(["yes", "yes", "no", "no", "yes"])]
    said = {"0": "Yes", "1": "no", "2": "yes.", "3": "No", "4": "yes"}  # tp 2, fp 1, fn 1
    m = metrics(items, said)
    assert m["precision"] == pytest.approx(200 / 3) and m["recall"] == pytest.approx(200 / 3)
    assert m["f1"] == pytest.approx(200 / 3) and m["yes_ratio"] == 60.0 and m["accuracy"] == 60.0
    assert m["yes_no_accuracy"] == 60.0


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(ROOT / "assets" / "rocket.jpg", folder / "rocket.jpg")
    shutil.copy(ROOT / "assets" / "toyworld.png", folder / "scene.png")
    rows = [
        {"image": "rocket.jpg", "question": "What is in the picture?", "answer": "rocket"},
        {"image": "scene.png", "question": "What color is the small cross?", "answer": "blue"},
        {"image": "rocket.jpg", "question": "Is there a rocket?", "answer": "yes", "label": "yes"},
    ]
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_reference_path_is_resumable(data, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["eval", "--model", "tiny-llava-next", "--data", str(data), "--method", "adafv,dart", "--keep", "16",
            "--out", str(out), "--max-new-tokens", "2", "--quiet"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"full", "adafv@16", "dart@16"}
    assert all(r["questions"] == 3 and 0 <= r["accuracy"] <= 100 for r in results["runs"].values())
    full = results["runs"]["full"]
    nonzero = {k for k, v in full.items() if k not in ("questions", "ratio_to_full") and v}
    assert set(full["ratio_to_full"]) == nonzero and all(v == 1.0 for v in full["ratio_to_full"].values())
    answers = sorted((out / "answers").glob("*.jsonl"))
    assert [p.name for p in answers] == ["adafv-k16.jsonl", "dart-k16.jsonl", "full.jsonl"]
    before = {p.name: p.read_text() for p in answers}
    (out / "answers" / "dart-k16.jsonl").write_text("".join(before["dart-k16.jsonl"].splitlines(True)[:2]))  # cut
    assert main(args) == 0  # answers only what is missing
    after = {p.name: p.read_text() for p in sorted((out / "answers").glob("*.jsonl"))}
    assert after == before
    assert "| dart@16 | 3 |" in capsys.readouterr().out


def test_method_options_and_keep_shares():
    assert parse_method("adafv") == ("adafv", {})
    assert parse_method("adafv:paper:compact") == ("adafv", {"mode": "paper", "layout": "compact"})
    assert parse_method("visionzip:rows") == ("visionzip", {"layout": "rows"})
    for bad in ("nope", "adafv:fast", "adafv:rows:compact", "adafv:paper:exact", "fastervlm:paper"):
        with pytest.raises(DataError):
            parse_method(bad)
    assert parse_keep("64") == 64 and parse_keep("10%") == "10%" and parse_keep("12.5%") == "12.5%"
    for bad in ("0", "-3", "0%", "101%", "x%", "ten"):
        with pytest.raises(DataError):
            parse_keep(bad)
    assert keep_for("10%", 248) == 25 and keep_for("50%", 5) == 2 and keep_for("1%", 20) == 1 and keep_for(7, 99) == 7


def test_eval_with_options_and_shares_records_the_kept_positions(data, tmp_path, tiny_next, photos):
    """`adafv:compact@25%` keeps round(25% of N*P) of each image, in the compact layout, and its answer line lists
    the kept positions: the same as the reference path run directly with that config."""
    from adafv import AdaFVConfig
    from adafv.eval.vqa import answers
    from adafv.runtime import load_image

    out = tmp_path / "out"
    args = ["eval", "--model", "tiny-llava-next", "--data", str(data), "--method", "adafv:compact,visionzip",
            "--keep", "25%", "--out", str(out), "--max-new-tokens", "2", "--quiet", "--suffix", ""]  # fmt: skip
    assert main(args) == 0
    assert set(json.loads((out / "results.json").read_text())["runs"]) == {"full", "adafv:compact@25%",
                                                                             "visionzip@25%"}  # fmt: skip
    rows = answers(out, "adafv:compact@25%")
    for item in load(data):
        image = load_image(item["image"])
        total = tiny_next.prepare(image, "?").num_crops * tiny_next.visual.patches_per_crop
        want = tiny_next.run(image, item["question"], AdaFVConfig(keep=round(total / 4), layout="compact"), 2)
        row = rows[str(item["id"])]
        assert row["kept"] == want["kept_positions"] and row["prediction"] == want["text"]
        assert row["visual_tokens"] == total and row["llm_visual_tokens"] == len(row["kept"])  # compact: no newlines
    assert all(row["llm_visual_tokens"] > len(row["kept"]) for row in answers(out, "visionzip@25%").values())  # rows
    # one run however it is spelled: the same options in another order, the same share written otherwise
    again = ["eval", "--model", "tiny-llava-next", "--data", str(data), "--method", "adafv:compact,adafv:compact",
             "--keep", "25%,25.0%", "--out", str(tmp_path / "again"), "--max-new-tokens", "2", "--quiet"]  # fmt: skip
    assert main(again) == 0
    assert set(json.loads((tmp_path / "again" / "results.json").read_text())["runs"]) == {"full", "adafv:compact@25%"}
    assert len(answers(tmp_path / "again", "adafv:compact@25%")) == 3
    assert len((tmp_path / "again" / "answers" / "adafv-compact-k25pc.jsonl").read_text().splitlines()) == 1 + 3


def test_eval_on_a_bundle(data, tmp_path, make_bundle):
    bundle = make_bundle("tiny-llava-next", 64).path
    assert main(["eval", "--model", str(bundle), "--data", str(data), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["path"] == "bundle" and list(results["runs"]) == ["adafv@64"]


def test_converters(tmp_path):
    gqa = tmp_path / "gqa.json"
    gqa.write_text(json.dumps({"q1": {"imageId": "n1", "question": "What is it?", "answer": "cat"}}))
    pope = tmp_path / "pope.json"
    pope.write_text(json.dumps({"question_id": 7, "image": "x.jpg", "text": "Is there a dog?", "label": "no"}) + "\n")
    textvqa = tmp_path / "textvqa.json"
    textvqa.write_text(json.dumps({"data": [{"question_id": 3, "image_id": "ab", "question": "What does it say?",
                                             "answers": ["stop"] * 10}]}))  # fmt: skip
    images = tmp_path / "images"
    images.mkdir()
    for name in ("n1.jpg", "x.jpg", "ab.jpg"):
        shutil.copy(ROOT / "assets" / "rocket.jpg", images / name)
    for kind, src in (("gqa", gqa), ("pope", pope), ("textvqa", textvqa)):
        out = tmp_path / f"{kind}.jsonl"
        assert convert(kind, src, images, out) == 1
        item = load(out)[0]
        assert item["image"].startswith(str(images))
    assert load(tmp_path / "pope.jsonl")[0]["label"] == "no"
    assert load(tmp_path / "textvqa.jsonl")[0]["answer"] == ["stop"] * 10


def test_bad_data_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "x.jpg", "question": "q"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1: missing answer"):
        load(bad)
    code = main(["eval", "--model", "tiny-llava", "--data", str(bad), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing answer" in err[0]
    for option, wanted in ((["--method", "adafv:fast"], "options are one mode"),
                           (["--keep", "150%"], "comma-separated list of keeps")):  # fmt: skip
        try:
            code = main(["eval", "--model", "tiny-llava", "--data", str(bad), "--quiet", *option])
        except SystemExit as e:  # argparse's own exit, as from the console script
            code = e.code
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and wanted in err[0], err
