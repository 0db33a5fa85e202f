"""The toy-world Qwen2.5-VL (eval/toyworld/qwen.py, model.build(family="qwen2_5_vl")): its geometry (objects on the
merged grid), its chat-template sequences and M-RoPE positions in training (against transformers' own
get_rope_index), a training smoke run that adafv loads and measures, and the shipped model."""

import random
from pathlib import Path

import numpy as np
import pytest

from adafv.eval.toyworld import scenes_v2 as v2

FAMILY = "qwen2_5_vl"


@pytest.fixture(scope="module")
def fresh():
    from adafv.eval.toyworld.model import build

    return build(0, world=v2, family=FAMILY)  # (model, processor)


def test_objects_land_on_the_cells_their_centres_fall_in(fresh):
    """Each small object's centre, scaled to the processed size, falls in a merged cell labelled with that object
    (when no other object is within its own diameter), and the processed grid is the processor's."""
    from adafv.eval.toyworld import qwen

    _, processor = fresh
    checked = 0
    for scene, _ in v2.heldout(30):
        objects = qwen.cell_objects(processor, scene)
        ((_, grid),) = qwen.processed(processor, [scene.image])
        assert objects["grid"] == grid
        rows, cols = grid[0] // 2, grid[1] // 2
        assert objects["cells"].shape == (rows * cols,) and objects["patches"].shape == (grid[0] * grid[1],)
        height, width = scene.labels.shape
        for i, o in enumerate(scene.objects):
            alone = all(np.hypot(o.x - p.x, o.y - p.y) > o.diameter for p in scene.objects if p is not o)
            if o.size != "small" or not alone:
                continue
            r, c = int(o.y / height * rows), int(o.x / width * cols)
            assert objects["cells"][r * cols + c] == i + 1, (scene.seed, i)
            checked += 1
    assert checked > 30


def test_every_text_and_the_template_are_in_the_qwen_vocabulary(fresh):
    _, processor = fresh
    tok = processor.tokenizer
    unk = tok.convert_tokens_to_ids("<|endoftext|>")
    template = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    )
    assert unk not in tok(template.replace("Hi", v2.DESCRIBE), add_special_tokens=False).input_ids
    for scene, _ in v2.heldout(30):
        for q in v2.questions(scene, random.Random(0), 6):
            for text in (q.text, q.answer, scene.description()):
                assert unk not in tok(text, add_special_tokens=False).input_ids, text


def test_training_sequences_label_the_answers_and_place_them_as_transformers_does(fresh):
    """render + collate for a Qwen conversation: labels only on the answers and their <|im_end|>; the M-RoPE
    positions of [text | image | text] are transformers' get_rope_index of the same conversation."""
    import torch

    from adafv.eval.toyworld import qwen
    from adafv.eval.toyworld.train import IGNORE, collate, render

    model, processor = fresh
    scene = v2.make_scene(7)
    turns = [("What color is the small square?", "red"), ("Is there a small blue cross?", "no")]
    pre, post, labels = render(processor, turns)
    tok = processor.tokenizer
    assert tok.convert_ids_to_tokens(pre[-1]) == "<|vision_start|>"
    assert tok.convert_ids_to_tokens(post[0]) == "<|vision_end|>"
    answered = [t for t, y in zip(post, labels) if y != IGNORE]
    assert tok.convert_ids_to_tokens(answered) == ["red", "<|im_end|>", "no", "<|im_end|>"]
    tokens, grids, _ = qwen.image_tokens(model, processor, [scene])
    rows = [(pre, tokens[0].detach(), torch.full((tokens[0].shape[0],), IGNORE), post, labels)]
    _, _, _, positions = collate(model.get_input_embeddings(), rows, grids)
    ids = torch.tensor([pre + [processor.image_token_id] * tokens[0].shape[0] + post])
    ((_, grid),) = qwen.processed(processor, [scene.image])
    want, _ = model.model.get_rope_index(ids, (ids == processor.image_token_id).int(),
                                         image_grid_thw=torch.tensor([[1, *grid]]))  # fmt: skip
    assert torch.equal(positions, want)


def test_qwen_training_smoke_is_loaded_and_measured_by_adafv(tmp_path):
    import torch

    from adafv import AdaFVConfig
    from adafv.eval.toyworld import world_of
    from adafv.eval.toyworld.evaluate import family_of, measure, methods_of
    from adafv.eval.toyworld.train import defaults, train
    from adafv.pipeline import Reference

    tiny = dict(batch=2, tower_batch=2, tower_steps=2, stage0_steps=1, stage1_steps=1, stage2_steps=2, warmup=1,
                threads=1, turns=2, stage0_place_steps=1, tower_place_steps=1)  # fmt: skip
    settings = __import__("dataclasses").replace(defaults("v2", FAMILY), **tiny)
    _, _, report = train(settings, tmp_path / "ckpt", progress=False)
    assert report["settings"]["family"] == FAMILY and world_of(tmp_path / "ckpt") is v2
    assert {"saliency_on_large", "pooled_color"} <= set(report["stages"]["tower"]["last50"])
    assert "ground_acc" in report["stages"]["stage2"]["last50"]
    assert all(np.isfinite(s["last50"]["loss"]) for s in report["stages"].values())
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert "Qwen2_5_VLForConditionalGeneration" in card and "--family qwen2_5_vl" in card
    reference = Reference.load(tmp_path / "ckpt")
    assert family_of(reference) == FAMILY and "adafv-rows" not in methods_of(FAMILY)
    scene, question = v2.sample(v2.HELDOUT_SEED)
    out = reference.run(scene.image, question.text, AdaFVConfig(keep=5), 3)
    assert out["num_kept"] == 5 and out["merged_grid"] is not None
    torch.set_num_threads(1)
    records = measure(reference, 4, ("full", "adafv", "random"), (10,), progress=False)
    assert [r["question"] for r in records] == [q.text for _, q in v2.heldout(4)]
    assert all(r["num_crops"] == 1 and "layout" not in r["answers"] for r in records)
    assert all(0.0 <= r["coverage"]["adafv@10"] <= 1.0 for r in records if r["coverage"])


def test_the_qwen_toy_is_trained_on_v2_only():
    from adafv.eval.toyworld.train import Settings, train

    with pytest.raises(ValueError, match="v2"):
        train(Settings(family=FAMILY, large_first=0.0), None, progress=False)


MODEL_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "toyworld-v2-qwen2.5-vl"


@pytest.fixture(scope="module")
def shipped():
    import torch

    from adafv.pipeline import Reference

    torch.set_num_threads(2)
    return Reference.load("toyworld-v2-qwen2.5-vl")


def test_shipped_qwen_model_is_registered_small_and_v2(shipped):
    import json

    from adafv.eval.toyworld import world_of

    assert Path(shipped.loaded.spec.source) == MODEL_DIR and world_of(MODEL_DIR) is v2
    assert shipped.loaded.arch.name == FAMILY and (MODEL_DIR / "model.safetensors").stat().st_size < 8_000_000
    assert json.loads((MODEL_DIR / "train.json").read_text())["settings"]["family"] == FAMILY


def test_qwen_card_and_results_page_agree_and_every_kind_is_stated():
    import json

    from adafv.eval.toyworld.evaluate import MARKERS, QUESTIONS, marker_key
    from adafv.eval.toyworld.train import RESULTS_BEGIN, RESULTS_END

    card = (MODEL_DIR / "README.md").read_text()
    page = (MODEL_DIR.parents[1] / "docs" / "results" / "toyworld.md").read_text()
    begin, end = MARKERS[marker_key("v2", FAMILY)]
    card_table = card.split(RESULTS_BEGIN)[1].split(RESULTS_END)[0].split("Reproduce")[0].strip()
    assert page.split(begin)[1].split(end)[0].split("Reproduce")[0].strip() == card_table
    metrics = json.loads((MODEL_DIR / "metrics.json").read_text())
    assert metrics["questions"] >= QUESTIONS["v2"] and set(metrics["kinds"]) == set(v2.KINDS)
    assert metrics["family"] == FAMILY and "global attention" in card_table and " relation |" in card_table


@pytest.mark.slow
def test_shipped_qwen_model_reproduces_its_slice(shipped):
    """The first 300 held-out questions of the card, answered again (every token; adafv, fastervlm, text,
    divprune and random at keep 10%): the same answers as the committed measurement, but for a near tie or two."""
    from adafv.eval.toyworld.evaluate import reproduce_slice

    stated, measured = reproduce_slice(shipped, MODEL_DIR)
    assert set(measured) == {"full", "adafv@10", "fastervlm@10", "text@10", "divprune@10", "random@10"}
    for key in stated:
        differ = sum(a != b for a, b in zip(stated[key], measured[key]))
        assert differ <= 2, (key, differ)


@pytest.mark.parametrize("name", ["toyworld-v2-llava-next", "toyworld-v2-qwen2.5-vl"])
def test_text_only_asks_what_stage_0_trained_on(name):
    """evaluate.text_only's prompt is stage 0's training sequence (render with the description in the image's
    place) up to the assistant's answer, for both families."""
    from adafv.eval.toyworld.evaluate import text_only_ids
    from adafv.eval.toyworld.train import IGNORE, render
    from adafv.pipeline import Reference

    reference = Reference.load(name)
    tok = reference.processor.tokenizer
    for scene, question in v2.heldout(5):
        pre, post, labels = render(reference.processor, [(question.text, question.answer)])
        desc = tok(scene.description(), add_special_tokens=False).input_ids
        first_answer = next(i for i, y in enumerate(labels) if y != IGNORE)
        assert text_only_ids(reference, scene, question) == pre + desc + post[:first_answer]


@pytest.mark.slow
def test_the_trained_qwen_toy_bundle_answers_like_the_reference(make_bundle, shipped):
    """The shipped Qwen toy through export and the torch-free runtime (an fp32 bundle at 128x112, keep 4): on
    held-out questions about scenes resized to the bundle's resolution (the runtime refuses a distorting resize),
    the same kept positions and answer tokens as the reference, and so the same answers right."""
    from PIL import Image

    from adafv import AdaFVConfig
    from adafv.runtime import Pipeline

    pipe = Pipeline.load(make_bundle("toyworld-v2-qwen2.5-vl", 4, llm="fp32", resolution=(128, 112)).path)
    right = [0, 0]
    for scene, question in v2.heldout(12):
        image = scene.image.resize((112, 128), Image.BICUBIC)  # (width, height)
        got = pipe.run(image, question.text, max_new_tokens=3)
        want = shipped.run(image, question.text, AdaFVConfig(keep=4), 3)
        assert got["kept_positions"] == want["kept_positions"] and got["tokens"] == want["tokens"]
        assert got["merged_grid"] == [8, 7]
        right[0] += got["text"] == question.answer
        right[1] += want["text"] == question.answer
    assert right[0] == right[1]
