"""Stage 0's object tokens (train.object_tokens: one input vector per object, the sum of its words' embeddings;
Qwen's on the image's merged grid), the text-only diagnostic over them, and `--tower-from` (a checkpoint's tower
instead of the tower stage, the same weights as training it again)."""

import dataclasses

import pytest
import torch

from adafv.eval.toyworld import qwen
from adafv.eval.toyworld import scenes_v2 as v2

TINY = dict(batch=2, tower_batch=2, tower_steps=2, stage0_steps=2, stage1_steps=1, stage2_steps=1, warmup=1,
            threads=1, turns=4, object_tokens=1, stage0_place_steps=1)  # fmt: skip


@pytest.fixture(scope="module", params=["llava_next", "qwen2_5_vl"])
def fresh(request):
    from adafv.eval.toyworld.model import build

    return request.param, *build(0, world=v2, family=request.param)  # (family, model, processor)


def test_each_object_token_is_its_objects_words_and_nothing_else(fresh):
    from adafv.eval.toyworld.train import object_tokens

    family, model, processor = fresh
    tok, embed = processor.tokenizer, model.get_input_embeddings()
    word = {w: embed.weight[tok.convert_tokens_to_ids(w)] for w in v2.WORDS}
    with torch.no_grad():
        for seed in range(6):
            scene = v2.make_scene(seed)
            tokens = object_tokens(scene, tok, embed, family)  # (K, D)
            assert tokens.shape == (len(scene.objects), model.config.text_config.hidden_size)
            by_description = [p.split() for p in scene.description().rstrip(" .").split(" , ")]
            for row, words in zip(tokens, by_description):
                if family == qwen.FAMILY:  # the place is the M-RoPE cell, not a word
                    words = [w for w in words if w not in v2.QUADRANTS]
                torch.testing.assert_close(row, sum(word[w] for w in words))


def test_qwens_stage_0_grid_is_the_image_in_words():
    """Qwen's object tokens: the image's merged grid (as many tokens as the image has, at its M-RoPE positions),
    each cell its covering object's token, else `<|image_pad|>`'s embedding; every object is on the grid."""
    from adafv.eval.toyworld.model import build
    from adafv.eval.toyworld.train import Settings, described, object_tokens

    model, processor = build(0, world=v2, family=qwen.FAMILY)
    settings = Settings(world="v2", family=qwen.FAMILY, object_tokens=1)
    tok, embed = processor.tokenizer, model.get_input_embeddings()
    pad = embed.weight[tok.convert_tokens_to_ids("<|image_pad|>")]
    with torch.no_grad():
        for seed in range(5):
            scene = v2.make_scene(seed)
            middle, labels, grid = described(scene, processor, embed, settings)
            ((_, patch_grid),) = qwen.processed(processor, [scene.image])
            assert grid == (patch_grid[0] // qwen.MERGE, patch_grid[1] // qwen.MERGE)
            assert middle.shape[0] == grid[0] * grid[1] and bool((labels == -100).all())
            tokens = dict(zip(map(id, scene.ordered()), object_tokens(scene, tok, embed, qwen.FAMILY)))
            cover = qwen.cell_objects(processor, scene)["cells"]  # (P,) object id + 1, 0 none
            assert set(cover) - {0} == set(range(1, len(scene.objects) + 1))
            for cell, which in enumerate(cover):
                want = pad if which == 0 else tokens[id(scene.objects[which - 1])]
                torch.testing.assert_close(middle[cell], want)


def test_a_pruned_stage_0_grid_keeps_every_object_at_its_own_cells_positions():
    """stage0_prune: a reduced grid keeps at least one cell of every object, some of the rest, in raster order, and
    each kept token sits at the M-RoPE position its cell has in the whole grid (as adafv.positions keeps it)."""
    import random

    from adafv.eval.toyworld.model import build
    from adafv.eval.toyworld.train import Settings, collate, described

    model, processor = build(0, world=v2, family=qwen.FAMILY)
    settings = Settings(world="v2", family=qwen.FAMILY, object_tokens=1, stage0_prune=1.0)
    embed = model.get_input_embeddings()
    rng, smaller = random.Random(0), []
    with torch.no_grad():
        for seed in range(12):
            scene = v2.make_scene(seed)
            whole, _, grid = described(scene, processor, embed, settings)  # no rng: the whole grid
            middle, labels, reduced = described(scene, processor, embed, settings, rng)
            rows, cols, kept = reduced
            assert (rows, cols) == grid and list(kept) == sorted(set(kept.tolist())) and len(kept) == len(middle)
            cover = qwen.cell_objects(processor, scene)["cells"]  # (P,)
            assert set(cover[kept]) - {0} == set(range(1, len(scene.objects) + 1))  # every object is still there
            torch.testing.assert_close(middle, whole[torch.from_numpy(kept)])
            smaller.append(len(kept) < rows * cols)
            pre, post = [5, 6, 7], [8, 9]
            *_, full = collate(embed, [(pre, whole, torch.full((len(whole),), -100), post, [-100] * 2)], [grid])
            *_, part = collate(embed, [(pre, middle, labels, post, [-100] * 2)], [reduced])
            image = torch.from_numpy(kept) + len(pre)
            assert torch.equal(part[:, 0, len(pre) : len(pre) + len(kept)], full[:, 0, image])
            assert torch.equal(part[:, 0, -len(post) :], full[:, 0, -len(post) :])  # the text after: unmoved
    assert sum(smaller) >= 6  # most draws reduce (seeded: u < 1 leaves some cells out)


@pytest.mark.parametrize("family", ["llava_next", "qwen2_5_vl"])
def test_object_token_training_is_measured_text_only_as_it_was_trained(tmp_path, family):
    """A model trained with object tokens: text_only reads its train.json and asks with object tokens; its first
    answer token is the stage-0 forward's prediction at the answer."""
    from adafv.eval.toyworld.evaluate import text_only, text_only_objects, training_settings
    from adafv.eval.toyworld.train import IGNORE, defaults, described, forward, render, train
    from adafv.pipeline import Reference

    qwen_only = {"tower_place_steps": 1} if family == qwen.FAMILY else {}
    settings = dataclasses.replace(defaults("v2", family), **TINY, **qwen_only)
    train(settings, tmp_path / "ckpt", progress=False)
    reference = Reference.load(tmp_path / "ckpt")
    assert training_settings(reference).object_tokens == 1
    model, processor = reference.model, reference.processor
    embed = model.get_input_embeddings()
    for scene, question in v2.heldout(3):
        pre, post, labels = render(processor, [(question.text, question.answer)])
        with torch.no_grad():
            middle, middle_labels, grid = described(scene, processor, embed, settings)
            out, _ = forward(model, settings, embed, [(pre, middle, middle_labels, post, labels)], [grid])
        first = next(i for i, y in enumerate(labels) if y != IGNORE)
        predicted = int(out.logits[0, len(pre) + len(middle) + first - 1].argmax())
        with torch.no_grad():
            answer = text_only_objects(reference, scene, question, settings)
        if predicted != processor.tokenizer.eos_token_id:
            assert answer.split()[0] == processor.tokenizer.convert_ids_to_tokens(predicted)
        else:
            assert answer == ""
    result = text_only(reference, 5)
    assert result["all"]["questions"] == 5 and set(result) - {"all"} <= set(v2.KINDS)


def test_tower_from_gives_the_weights_training_the_tower_again_gives(tmp_path):
    from adafv.eval.toyworld.train import TOWER_SETTINGS, V2, Settings, tower_parameters, train

    settings = Settings(**{**V2, **TINY})
    scratch, _, _ = train(settings, tmp_path / "a", progress=False)
    reused, _, report = train(dataclasses.replace(settings, tower_from=str(tmp_path / "a")), None, progress=False)
    assert report["stages"]["tower"]["from"] == str(tmp_path / "a")
    assert "tower_steps" in TOWER_SETTINGS
    for (name, p), q in zip(scratch.named_parameters(), reused.parameters()):
        assert torch.equal(p, q), name
    assert set(tower_parameters(scratch)) and all(
        torch.equal(p, q) for p, q in zip(tower_parameters(scratch).values(), tower_parameters(reused).values())
    )


def test_tower_from_refuses_a_tower_trained_otherwise(tmp_path, capsys):
    from adafv.eval.toyworld.train import V2, Settings, main, train

    settings = Settings(**{**V2, **TINY})
    train(settings, tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="tower_steps"):
        train(dataclasses.replace(settings, tower_steps=3, tower_from=str(tmp_path / "a")), None, progress=False)
    for source in (tmp_path / "a", tmp_path / "missing"):
        with pytest.raises(SystemExit) as exit_:
            main(["--world", "v2", "--tower-from", str(source), "--stage0-steps", "1", "--quiet"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--tower-from" in err and ("no train.json" in err or "tower_steps" in err), err


def test_the_stage_0_diagnostic_reports_every_kind(capsys):
    import json

    from adafv.eval.toyworld.stage0 import main

    assert main(["--stage0-steps", "1", "--stage0-place-steps", "1", "--batch", "1", "--turns", "1", "--warmup", "1",
                 "--threads", "1", "--questions", "10"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["object_tokens"] == 1 and out["questions"] == 10
    assert set(out["accuracy"]) == {"all", *v2.KINDS} and 0.0 <= out["accuracy"]["all"] <= 100.0
    assert "place" in out["training"]
    with pytest.raises(SystemExit) as exit_:
        main(["--questions", "0"])
    assert exit_.value.code == 2


def test_stage_0_asks_where_first_then_everything(monkeypatch):
    from adafv.eval.toyworld import train
    from adafv.eval.toyworld.model import build

    asked = []
    real = v2.questions

    def spy(scene, rng, n, **distribution):
        out = real(scene, rng, n, **distribution)
        asked.append({q.kind for q in out})
        return out

    monkeypatch.setattr(v2, "questions", spy)
    settings = dataclasses.replace(train.defaults("v2"), **{**TINY, "stage0_place_steps": 2, "stage0_steps": 1})
    model, processor = build(0, world=v2)
    train.freeze(model, tower=True, llm=False)
    report = train.stage0(model, processor, settings, None)
    assert report["place"]["steps"] == 2 and report["steps"] == 1
    place, every = asked[: 2 * settings.batch], asked[2 * settings.batch :]
    assert len(every) == settings.batch and all(kinds <= set(train.PLACE_KINDS) for kinds in place)
    assert any(kinds - set(train.PLACE_KINDS) for kinds in every)


def test_qwen_object_tokens_with_place_keep_the_quadrant_word_and_the_grounding_table_agrees():
    """ground_position on Qwen: stage 0's object tokens keep the quadrant word (object_tokens(place=True)) and the
    image stages ground each small object's tokens to the same word (small_quadrants: QUADRANTS order, the
    distractor none, as its phrase has no place)."""
    from adafv.eval.toyworld.model import build
    from adafv.eval.toyworld.train import object_tokens, small_quadrants

    model, processor = build(0, world=v2, family=qwen.FAMILY)
    tok, embed = processor.tokenizer, model.get_input_embeddings()
    word = {w: embed.weight[tok.convert_tokens_to_ids(w)] for w in v2.WORDS}
    with torch.no_grad():
        for seed in range(6):
            scene = v2.make_scene(seed)
            tokens = object_tokens(scene, tok, embed, qwen.FAMILY, place=True)  # (K, D)
            for row, phrase in zip(tokens, scene.phrases()):
                torch.testing.assert_close(row, sum(word[w] for w in phrase.split()))
            table = small_quadrants(scene)  # (8,) by object id + 1
            for i, o in enumerate(scene.objects):
                named = [w for w in scene.phrases()[scene.ordered().index(o)].split() if w in v2.QUADRANTS]
                assert table[i + 1] == (v2.QUADRANTS.index(named[0]) + 1 if named else 0)
            assert table[1] == 0 and not table[len(scene.objects) + 1 :].any()


QWEN_TINY = {**TINY, "tower_place_steps": 2, "ground_position": 1}


def test_the_qwen_tower_place_stage_gives_the_same_weights_after_a_tower_taken(tmp_path):
    """The tower place stage runs on the tower stage's result, reseeded: from scratch, on a tower taken from a
    checkpoint without it, and taken from a checkpoint with it (then skipped) the weights are the same; other
    place steps than the checkpoint's are refused, and LLaVA has no such stage."""
    from adafv.eval.toyworld.train import defaults, train

    base = dataclasses.replace(defaults("v2", qwen.FAMILY), **QWEN_TINY)
    scratch, _, report = train(base, tmp_path / "scratch", progress=False)
    place = report["stages"]["tower_place"]
    assert place["steps"] == 2 and "small_quadrant" in place["last50"]
    train(dataclasses.replace(base, tower_place_steps=0), tmp_path / "plain", progress=False)
    for source in ("plain", "scratch"):
        reused, _, again = train(dataclasses.replace(base, tower_from=str(tmp_path / source)), None, progress=False)
        assert again["stages"]["tower_place"]["last50"] == place["last50"]
        for (name, p), q in zip(scratch.named_parameters(), reused.parameters()):
            assert torch.equal(p, q), (source, name)
    with pytest.raises(ValueError, match="tower place steps"):
        train(dataclasses.replace(base, tower_place_steps=3, tower_from=str(tmp_path / "scratch")), None, False)
    with pytest.raises(ValueError, match="tower_place_steps"):
        train(dataclasses.replace(defaults("v2"), **TINY, tower_place_steps=1), None, progress=False)
