"""adafv.eval.toyworld: deterministic scenes, a training smoke run, the shipped model's accuracy and the measurement."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from adafv.eval.toyworld import scenes

MODEL_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "toyworld-llava-next"


def test_same_seed_same_scene_and_question():
    for seed in (0, 7, scenes.HELDOUT_SEED + 11):
        (a, qa), (b, qb) = scenes.sample(seed), scenes.sample(seed)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert np.array_equal(a.labels, b.labels)
        assert a.objects == b.objects and qa == qb and a.grid == b.grid
        assert scenes.questions(a, random.Random(1), 5) == scenes.questions(b, random.Random(1), 5)
    (a, _), (b, _) = scenes.sample(1), scenes.sample(2)
    assert a.image.size != b.image.size or not np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_heldout_set_is_fixed_and_mixed():
    first = [(s.seed, q) for s, q in scenes.heldout(120)]
    assert first[:10] == [(s.seed, q) for s, q in scenes.heldout(10)]
    assert [seed for seed, _ in first] == [scenes.HELDOUT_SEED + i for i in range(120)]
    questions = [q for _, q in first]
    assert {q.kind for q in questions} == set(scenes.KINDS)
    small = sum(q.size == "small" for q in questions)
    assert 0.5 * len(questions) < small < 0.9 * len(questions)  # many questions about small objects, some large
    assert {q.answer for q in questions if q.kind == "exist"} == {"yes", "no"}


def test_every_grid_occurs_and_matches_transformers():
    from transformers.image_processing_utils import select_best_resolution

    grids = set()
    for scene, _ in scenes.heldout(80):
        h, w = scene.image.height, scene.image.width
        best = select_best_resolution((h, w), scenes.PINPOINTS)
        assert (best[0] // scenes.CROP, best[1] // scenes.CROP) == scene.grid == scenes.best_grid(h, w)
        grids.add(scene.grid)
    assert grids == set(scenes.GRIDS)


def test_questions_are_answerable_and_in_vocabulary():
    from adafv.eval.toyworld.model import hf_tokenizer

    tok = hf_tokenizer()
    answers = set(scenes.COLORS) | set(scenes.QUADRANTS) | set(scenes.NUMBERS) | {"yes", "no"}
    for scene, question in scenes.heldout(60):
        assert question.answer in answers and " " not in question.answer
        for text in (question.text, scene.description(), question.answer, scenes.DESCRIBE):
            assert tok.unk_token_id not in tok(text).input_ids, text
        objs = scene.objects
        if question.kind == "color":
            (i,) = question.target
            assert objs[i].color == question.answer and objs[i].size == question.size
            assert sum(o.shape == objs[i].shape and o.size == objs[i].size for o in objs) == 1
        if question.kind == "count":
            assert question.answer == scenes.NUMBERS[len(question.target)]
        # small objects are small and in their quadrant; the large one is large
        assert objs[0].size == "large" and all(o.size == "small" for o in objs[1:])
        assert all(o.diameter * 1.5 < objs[0].diameter for o in objs[1:])


def test_one_training_step_smoke(tmp_path):
    from adafv import AdaFVConfig
    from adafv.eval.toyworld.train import Settings, train
    from adafv.pipeline import Reference

    settings = Settings(
        batch=2, tower_steps=1, stage0_steps=1, stage1_steps=1, stage2_steps=1, warmup=1, threads=1, turns=2
    )
    import torch

    threads = torch.get_num_threads()
    _, _, report = train(settings, tmp_path / "ckpt", progress=False)
    assert torch.get_num_threads() == threads  # the caller's setting is given back
    assert set(report["stages"]) == {"tower", "stage0", "stage1", "stage2"}
    assert all(np.isfinite(s["last50"]["loss"]) for s in report["stages"].values())
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "README.md"):
        assert (tmp_path / "ckpt" / name).is_file(), name
    scene, question = scenes.sample(scenes.HELDOUT_SEED)
    result = Reference.load(tmp_path / "ckpt").run(scene.image, question.text, AdaFVConfig(keep=16), 3)
    assert result["num_kept"] == 16 and isinstance(result["text"], str)


def test_stock_features_in_training_equal_the_pipeline(tmp_path):
    """Stages 1-2 feed exactly the features `generate` (method full) sees."""
    import torch

    from adafv.eval.toyworld.model import build, save
    from adafv.eval.toyworld.train import crops, visual_features
    from adafv.pipeline import Reference

    save(*build(seed=3), tmp_path)
    reference = Reference.load(tmp_path)
    batch = [scenes.make_scene(s) for s in (5, 6)]
    pixel_values, sizes, counts = crops(reference.processor, [s.image for s in batch])
    packed = visual_features(reference.model, pixel_values, sizes, counts)
    for scene, features in zip(batch, packed):
        stock = reference.stock_image_features(reference.prepare(scene.image, "Describe the picture."))
        torch.testing.assert_close(features, stock, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def toyworld():
    from adafv.pipeline import Reference

    return Reference.load("toyworld-llava-next")


def test_shipped_model_loads_offline_and_is_small(toyworld):
    assert Path(toyworld.loaded.spec.source) == MODEL_DIR
    assert (MODEL_DIR / "model.safetensors").stat().st_size < 8_000_000
    assert toyworld.loaded.config.vision_feature_layer == -2
    assert toyworld.processor.num_additional_image_tokens == 1


@pytest.mark.slow
def test_shipped_model_full_accuracy_is_what_the_card_states(toyworld):
    from adafv.eval.toyworld.evaluate import measure, summarize

    metrics = json.loads((MODEL_DIR / "metrics.json").read_text())
    stated = metrics["accuracy"]["full"]["all"]
    assert f"{stated:.1f}" in (MODEL_DIR / "README.md").read_text()
    records = measure(toyworld, metrics["questions"], ("full",), (), progress=False, diagnostics=False)
    measured = summarize(records)["accuracy"]["full"]
    assert abs(measured["all"] - stated) <= 1.0, (measured, stated)
    assert abs(measured["small"] - metrics["accuracy"]["full"]["small"]) <= 1.0


def test_readme_shows_the_cards_measurement():
    """The results page's toy-world table is the card's (both written by `evaluate --card --readme
    docs/results/toyworld.md`)."""
    from adafv.eval.toyworld.evaluate import README_BEGIN, README_END
    from adafv.eval.toyworld.train import RESULTS_BEGIN, RESULTS_END

    card = (MODEL_DIR / "README.md").read_text()
    readme = (MODEL_DIR.parents[1] / "docs" / "results" / "toyworld.md").read_text()
    card_table = card.split(RESULTS_BEGIN)[1].split(RESULTS_END)[0].split("Reproduce")[0].strip()
    readme_table = readme.split(README_BEGIN)[1].split(README_END)[0].split("Reproduce")[0].strip()
    assert "| adafv (exact) |" in card_table and "keep 5%" in card_table
    assert readme_table == card_table
    metrics = json.loads((MODEL_DIR / "metrics.json").read_text())
    assert metrics["questions"] >= 500 and f"{metrics['accuracy']['full']['all']:.1f}" in readme_table


def test_measurement_command_runs_on_a_subset(tmp_path, capsys):
    from adafv.eval.toyworld.evaluate import main

    out = tmp_path / "m.json"
    argv = ["--questions", "20", "--methods", "adafv", "random", "--keeps", "10", "--quiet", "--json", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| adafv (exact) |" in table and "| random |" in table and "keep 10%" in table
    data = json.loads(out.read_text())
    assert len(data["records"]) == 20
    for r in data["records"]:
        assert set(r["answers"]) == {"adafv@10", "random@10"}
    acc = data["summary"]["accuracy"]
    assert 0 <= acc["adafv@10"]["all"] <= 100 and acc["adafv@10"]["small"] is not None


def test_cli_run_and_demo_answer_a_generated_scene(tmp_path, capsys):
    from adafv.cli.demo import run_demo
    from adafv.cli.main import main

    scene, question = scenes.sample(scenes.HELDOUT_SEED + 1)
    path = tmp_path / "scene.png"
    scene.image.save(path)
    assert main(["run", "toyworld-llava-next", "--keep", "64", "--image", str(path), "--prompt", question.text]) == 0
    answer = capsys.readouterr().out.strip()
    assert answer and " " not in answer
    assert run_demo() == 0
    out = capsys.readouterr().out
    assert "toyworld-llava-next" in out and "expected:" in out and "(correct)" in out


def test_the_measurement_is_the_readme_adafv_eval_call(tmp_path, toyworld):
    """The README's by-hand command (export the held-out questions, then `adafv eval` with shares, colon options, no
    suffix, 3 tokens) answers exactly what the measurement's table counts."""
    from adafv.cli.main import main as cli
    from adafv.eval.toyworld.evaluate import measure
    from adafv.eval.toyworld.export import main as export
    from adafv.eval.vqa import answers

    assert export(["--out", str(tmp_path / "tw"), "--questions", "12"]) == 0
    args = ["eval", "--model", "toyworld-llava-next", "--data", str(tmp_path / "tw" / "questions.jsonl"),
            "--suffix", "", "--max-new-tokens", "3", "--method", "adafv:rows,visionzip:compact", "--keep", "10%",
            "--out", str(tmp_path / "eval"), "--quiet"]  # fmt: skip
    assert cli(args) == 0
    records = measure(toyworld, 12, ("full", "adafv-rows", "visionzip"), (10,), progress=False, diagnostics=False)
    for run, key in (("full", "full"), ("adafv:rows@10%", "adafv-rows@10"), ("visionzip:compact@10%", "visionzip@10")):
        by_hand = answers(tmp_path / "eval", run)
        assert [by_hand[str(i)]["prediction"] for i in range(12)] == [r["answers"][key] for r in records], run


def test_summary_has_intervals_the_non_salient_slice_and_paired_tests():
    """summarize() on hand-made records: Wilson intervals per row, the slice of targets outside the salient half,
    and adafv paired against each baseline only on keeps where both ran."""
    from adafv.eval.toyworld.evaluate import markdown, summarize

    records = []
    for i in range(40):
        answers = {"adafv@10": "red" if i < 30 else "blue", "random@10": "red" if i < 20 else "blue",
                   "adafv@50": "red"}  # fmt: skip
        records.append({"index": i, "question": "q", "answer": "red", "kind": "color", "size": "small",
                        "num_crops": 3, "num_visual_tokens": 192, "answers": answers, "coverage": {},
                        "target_salience": 0.2 if i % 2 else 0.9})  # fmt: skip
    s = summarize(records)
    assert s["accuracy"]["adafv@10"]["all"] == 75.0 and s["accuracy"]["adafv@10"]["ci95"] == [59.8, 85.8]
    assert s["non_salient_questions"] == 20 and s["accuracy"]["random@10"]["non_salient"] == 50.0
    t = s["paired"]["adafv vs random@10"]
    assert (t["a_only"], t["b_only"], t["difference"]) == (10, 0, 25.0) and t["p"] == pytest.approx(2 / 1024)
    assert set(s["paired"]) == {"adafv vs random@10"}  # no random at 50%, nothing at 5%
    text = markdown(s, ("adafv", "random"), (50, 10))
    assert "75.0 [59.8, 85.8]" in text and "The non-salient slice: 20 questions" in text
    assert "| adafv (exact) vs random | 10% | +25.0 | 10 / 0 | 0.00195 |" in text
