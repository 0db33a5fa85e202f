"""The measurement: accuracy vs keep of every selection method on the fixed held-out toy-world questions.

    .venv/bin/python -m adafv.eval.toyworld.evaluate                  # 600 questions, all methods, keep 50/25/10/5 %
    .venv/bin/python -m adafv.eval.toyworld.evaluate --card           # ... and write the table into the model card
    .venv/bin/python -m adafv.eval.toyworld.evaluate --card --readme docs/results/toyworld.md   # ... and the docs

It is a call of what users run: the held-out questions are exported as `adafv eval`'s JSONL
(`adafv.eval.toyworld.export`) and answered by `adafv eval` on the PyTorch reference path (`adafv.eval.vqa.evaluate`:
the model's own processor, adafv's vision module and selection, greedy generation with `inputs_embeds`), the same as

    python -m adafv.eval.toyworld.export --out tw && adafv eval --model toyworld-llava-next --data tw/questions.jsonl \
        --method adafv:compact,adafv:rows,... --keep 50%,25%,10%,5% --suffix "" --max-new-tokens 3

`--text-only` is a diagnostic of the LLM alone (`text_only`): every question asked with the scene's description in
the image's place, as stage 0 trained it; run it on stage 0's weights (after stage 2 the LLM has left the
description format behind).

`full` feeds the stock transformers image features (`Reference.stock_image_features`). `keep` is a fraction of each
sample's own visual tokens N*P (rounded, at least 1). An answer is right when the generated text equals the one-word
answer. `random` draws its positions with the question's index as seed. With `full`, a `blind` row is
added: the most common answer of each question kind and size, the score of a model that never looks; and a
`layout` row: every token, but laid out as the reduced sequences are (reading order, no unpadding, no newline
tokens), which separates the cost of the layout from the cost of dropping tokens.

Besides accuracy, it reports how much of the object a question is about each selection keeps ("target coverage":
the share of the target object's patches, over all crops, among the kept positions) and where the saliency cue
looks (its mass on the large object's patches in the base view).

Both families are measured the same way: the LLaVA-NeXT toy (crops of patches, [CLS] attention as saliency) and the
Qwen2.5-VL toy (one image of merged tokens, global attention as saliency, `qwen.token_objects` for the targets;
its table has no rows-layout methods and no `layout` row: without newline tokens or unpadding, Qwen's reduced
layout is its stock one).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import sys
import time
from pathlib import Path

import torch

from ..stats import mcnemar, wilson
from . import qwen, scenes, world, world_of

METHODS = ("full", "adafv", "adafv-paper", "adafv-rows", "fastervlm", "fastervlm-rows", "dart", "divprune",
           "visionzip", "text", "random")  # fmt: skip
ROWS = "-rows"  # the kept tokens in grid rows, with the model's image_newline after each kept row
KEEPS = (50, 25, 10, 5)  # percent of each sample's visual tokens N*P
QUESTIONS = {"v1": 600, "v2": 1800}  # held-out questions of the committed measurement, per world
MAX_NEW_TOKENS = 3
LABELS = {
    "full": "full (all tokens)",
    "adafv": "adafv (exact)",
    "adafv-paper": "adafv (paper)",
    "adafv-rows": "adafv (exact), rows layout",
    "fastervlm": "fastervlm",
    "fastervlm-rows": "fastervlm, rows layout",
    "dart": "dart",
    "divprune": "divprune",
    "visionzip": "visionzip",
    "text": "text",
    "random": "random",
}
METRICS_FILE = "metrics.json"
NON_SALIENT = 0.75  # a question's target is "not salient" when none of its patches is in the image's top quarter
PAIRED_KEEPS = (10, 5)  # adafv against each baseline on the same questions at these keeps
SALIENCY = {"llava_next": "[CLS] attention", "qwen2_5_vl": "global attention"}  # each family's saliency cue


def family_of(reference) -> str:
    """The toy model's family: llava_next or qwen2_5_vl (its arch's name)."""
    return reference.loaded.arch.name


def methods_of(family: str) -> tuple[str, ...]:
    """The table's methods for a family. Qwen's has no rows layout (no newline embedding, no crops) and no paper
    mode (it splits the budget per crop with a floor of 2 tokens a crop, which the smallest images' keep 5% of
    18-24 merged tokens is below; on one image it is the exact mode with the reference code's offsets)."""
    if family != qwen.FAMILY:
        return METHODS
    return tuple(m for m in METHODS if not m.endswith(ROWS) and m != "adafv-paper")


@functools.cache
def blind_answers(samples: int = 1000, world_name: str = "v1") -> dict[tuple[str, str], str]:
    """The answer a model that never looks at the image would give: the most common answer of each (kind, size)
    over `samples` training samples (seeds 0 ..) of a world. The floor every method's accuracy is read against."""
    counts: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    W = world(world_name)
    for seed in range(samples):
        _, question = W.sample(seed)
        counts[(question.kind, question.size)][question.answer] += 1
    return {key: c.most_common(1)[0][0] for key, c in counts.items()}


def target_patches(reference, scene: scenes.Scene, question: scenes.Question, num_crops: int) -> torch.Tensor:
    """Crop-major positions (N*P,) bool: patches covered by an object the question is about (Qwen: merged tokens,
    raster)."""
    from .train import patch_objects

    if family_of(reference) == qwen.FAMILY:
        which = qwen.token_objects(reference.processor, scene)  # (P,) object id + 1, 0 = none
    else:
        which = patch_objects(reference.processor, [scene], [num_crops]).flatten()  # (N*P,) object id + 1, 0 = none
    wanted = torch.tensor([i + 1 for i in question.target], dtype=torch.long)
    return torch.isin(which, wanted) if len(question.target) else torch.zeros_like(which, dtype=torch.bool)


SPECS = {  # each method of the table as an `adafv eval` method: the compact layout unless it says rows
    "adafv": "adafv:compact",
    "adafv-paper": "adafv:paper:compact",
    "adafv-rows": "adafv:rows",
    "fastervlm": "fastervlm:compact",
    "fastervlm-rows": "fastervlm:rows",
    "dart": "dart:compact",
    "divprune": "divprune:compact",
    "visionzip": "visionzip:compact",
    "text": "text:compact",
    "random": "random:compact",
}


def measure(
    reference,
    n: int | None = None,
    methods=None,
    keeps=KEEPS,
    start: int = 0,
    progress: bool = True,
    diagnostics: bool = True,
) -> list[dict]:
    """Answer held-out questions start .. start+n-1 (n: the world's QUESTIONS by default) of the world the model
    was trained on with every method and keep; one record per question.

    The answers are `adafv eval`'s (`adafv.eval.vqa.evaluate` on the questions exported as its JSONL, no suffix,
    3 new tokens, keeps as shares of each image's tokens); this adds what only the toy world knows: the `blind` and
    `layout` rows and, with `diagnostics`, target coverage (from the kept positions eval records) and saliency."""
    import tempfile

    from adafv.eval import vqa
    from adafv.vision import reading_order

    from .export import export

    W = world_of(reference.loaded.spec.source)
    n = QUESTIONS[W.NAME] if n is None else n
    methods = methods_of(family_of(reference)) if methods is None else methods
    runs = {method: SPECS[method] for method in methods if method != "full"}
    shares = {keep: f"{keep:g}%" for keep in keeps}
    with tempfile.TemporaryDirectory(prefix="adafv-toyworld-") as tmp:
        data = export(Path(tmp) / "data", questions=n, start=start, world=W)
        out = Path(tmp) / "eval"
        vqa.evaluate(reference, data, list(runs.values()), list(shares.values()), out, MAX_NEW_TOKENS, suffix="",
                     progress=progress, full="full" in methods)  # fmt: skip
        rows = {"full": vqa.answers(out, "full")} if "full" in methods else {}
        for method, spec in runs.items():
            for keep, share in shares.items():
                rows[f"{method}@{keep}"] = vqa.answers(out, f"{spec}@{share}")

    is_qwen = family_of(reference) == qwen.FAMILY
    side = None if is_qwen else reference.visual.patches_per_side
    records = []
    with torch.no_grad():
        for i, (scene, question) in enumerate(W.heldout(n, start), start=start):
            ident = str(i - start)  # the exported line's id
            tokens_in = next(iter(rows.values()))[ident]["visual_tokens"]
            N, P = (1, tokens_in) if is_qwen else (tokens_in // side**2, side**2)  # Qwen: one image of P tokens
            record = {
                "index": i,
                "question": question.text,
                "answer": question.answer,
                "kind": question.kind,
                "size": question.size,
                "num_crops": N,
                "num_visual_tokens": N * P,
                "answers": {key: row[ident]["prediction"] for key, row in rows.items()},
                "coverage": {},
            }
            if "full" in methods or diagnostics:
                prepared = reference.prepare(scene.image, question.text)
                tokens, saliency, _ = reference.scores(prepared)  # (N, P, D), (N, P)
            if "full" in methods:
                record["answers"]["blind"] = blind_answers(world_name=W.NAME).get((question.kind, question.size), "")
            if "full" in methods and not is_qwen:
                every = torch.arange(N * P)[None]  # (1, N*P): keep everything, but in the reduced sequences' layout
                flat = tokens.reshape(N * P, -1)
                visual = flat.index_select(0, reading_order(every, side, prepared.grid[1])[0])
                ids = reference.generate(prepared, visual, MAX_NEW_TOKENS)
                text = reference.processor.tokenizer.decode(ids, skip_special_tokens=True)
                record["answers"]["layout"] = text.strip()
            for key, row in rows.items():
                if key.split("@")[0].endswith(ROWS):  # image_newline tokens the rows layout added
                    record.setdefault("newlines", {})[key] = row[ident]["llm_visual_tokens"] - len(row[ident]["kept"])
            if diagnostics:
                target = target_patches(reference, scene, question, N)
                large = target_patches(reference, scene, scenes.Question("", "", "", "large", (0,)), N)
                base = saliency[0]  # (P,) base view
                record["saliency_on_large"] = float(base[large[:P]].sum() / base.sum())
                record["large_area_base"] = float(large[:P].float().mean())
                if target.any():
                    # how salient the target is: the share of the image's patches less salient than its most
                    # salient patch (1 = it holds the most salient patch; below NON_SALIENT: none in the upper half)
                    flat = saliency.flatten()  # (N*P,) [CLS] attention of each crop's patches
                    below = (flat[None] < flat[target][:, None]).float().mean(1)  # (T,) share less salient
                    record["target_salience"] = float(below.max())
                    record["target_salience_mean"] = float(below.mean())
                    for key, row in rows.items():
                        if key != "full":
                            kept = torch.zeros(N * P, dtype=torch.bool)
                            kept[row[ident]["kept"]] = True
                            record["coverage"][key] = float((kept & target).sum() / target.sum())
            records.append(record)
    return records


def text_only_ids(reference, scene, question) -> list[int]:
    """The prompt `text_only` asks: the chat template with the scene's description where the image goes, up to the
    assistant's turn (stage 0's training sequence without its answer)."""
    tok = reference.processor.tokenizer
    placeholder = tok.convert_ids_to_tokens(reference.loaded.image_token_id)
    text = reference.loaded.render_prompt(question.text).replace(placeholder, scene.description())
    return tok(text, add_special_tokens=family_of(reference) != qwen.FAMILY).input_ids


def training_settings(reference):
    """The train.Settings the model was trained with (its train.json), or None when it has none."""
    from .train import Settings

    path = Path(reference.loaded.spec.source) / "train.json"
    if not path.is_file():
        return None
    given = json.loads(path.read_text()).get("settings", {})
    return Settings(**{f: given[f] for f in Settings.__dataclass_fields__ if f in given})


def text_only_objects(reference, scene, question, settings) -> str:
    """`text_only`'s answer when stage 0 fed object tokens (train.object_tokens, Settings.object_tokens): the
    prompt's text around them, greedy, each step a full forward laid out as training laid it out (train.collate:
    Qwen's grid at the image's M-RoPE positions)."""
    from .train import IGNORE, collate, described

    tok, model = reference.processor.tokenizer, reference.model
    embed = model.get_input_embeddings()
    placeholder = tok.convert_ids_to_tokens(reference.loaded.image_token_id)
    before, after = reference.loaded.render_prompt(question.text).split(placeholder)
    is_qwen = family_of(reference) == qwen.FAMILY
    pre = tok(before, add_special_tokens=not is_qwen).input_ids
    post = tok(after, add_special_tokens=False).input_ids
    middle, middle_labels, grid = described(scene, reference.processor, embed, settings)
    answer = []
    for _ in range(MAX_NEW_TOKENS):
        row = (pre, middle, middle_labels, post + answer, [IGNORE] * (len(post) + len(answer)))
        if is_qwen:
            inputs, mask, _, positions = collate(embed, [row], [grid])
            logits = model(inputs_embeds=inputs, attention_mask=mask, position_ids=positions).logits
        else:
            inputs, mask, _ = collate(embed, [row])
            logits = model(inputs_embeds=inputs, attention_mask=mask).logits
        token = int(logits[0, -1].argmax())
        if token == tok.eos_token_id:
            break
        answer.append(token)
    return tok.decode(answer, skip_special_tokens=True).strip()


@torch.no_grad()
def text_only(reference, n: int | None = None, start: int = 0) -> dict:
    """The LLM alone, as stage 0 trained it: each held-out question asked with the scene's *description* in the
    image's place (the chat template's text, greedy, MAX_NEW_TOKENS; a model whose stage 0 fed object tokens, by
    its train.json, gets those: `text_only_objects`). What the LLM can answer when it is told exactly what is in
    the picture: an upper bound set by the LLM, which separates what the LLM cannot do (a kind it fails here)
    from what the vision side loses (a kind it answers here but not from the image). Accuracy (%) overall and per
    kind, with 95% intervals."""
    W = world_of(reference.loaded.spec.source)
    n = QUESTIONS[W.NAME] if n is None else n
    tok = reference.processor.tokenizer
    model = reference.model
    settings = training_settings(reference)
    right = collections.defaultdict(list)
    for scene, question in W.heldout(n, start):
        if settings is not None and settings.object_tokens:
            answer = text_only_objects(reference, scene, question, settings)
        else:
            ids = torch.tensor([text_only_ids(reference, scene, question)])  # (1, L)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW_TOKENS,
                                 do_sample=False, pad_token_id=tok.pad_token_id)  # fmt: skip
            answer = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        right[question.kind].append(answer == question.answer)
        right["all"].append(answer == question.answer)
    return {kind: {"accuracy": _mean(oks), "ci95": [round(100 * v, 1) for v in wilson(sum(oks), len(oks))],
                   "questions": len(oks)} for kind, oks in right.items()}  # fmt: skip


def _mean(values) -> float | None:
    values = list(values)
    return round(100 * sum(values) / len(values), 1) if values else None


def summarize(records: list[dict], kinds=None, family: str = "llava_next") -> dict:
    """Accuracy (%) per method key overall / small / large / per kind (`kinds`: the world's KINDS, by default v1's
    and any other the records have); target coverage (%) per key. `family` names the saliency cue in the text."""
    kinds = list(kinds or dict.fromkeys([*scenes.KINDS, *(r["kind"] for r in records)]))
    keys = list(records[0]["answers"]) if records else []
    table = {}
    for key in keys:
        right = [(r, r["answers"][key] == r["answer"]) for r in records]
        row = {"all": _mean(ok for _, ok in right)}
        for size in scenes.SIZES:
            row[size] = _mean(ok for r, ok in right if r["size"] == size)
        for kind in kinds:
            row[kind] = _mean(ok for r, ok in right if r["kind"] == kind)
            of_kind = [ok for r, ok in right if r["kind"] == kind]
            if of_kind:
                row[f"{kind}_ci95"] = [round(100 * v, 1) for v in wilson(sum(of_kind), len(of_kind))]
            for size in scenes.SIZES:
                row[f"{kind}/{size}"] = _mean(ok for r, ok in right if r["kind"] == kind and r["size"] == size)
        added = [r["newlines"][key] for r in records if key in r.get("newlines", {})]
        if added:
            row["mean_newlines"] = round(sum(added) / len(added), 1)  # image_newline tokens the rows layout adds
        k = sum(ok for _, ok in right)
        row["ci95"] = [round(100 * v, 1) for v in wilson(k, len(right))]
        hidden = [ok for r, ok in right if r.get("target_salience", 1.0) < NON_SALIENT]
        if hidden:
            row["non_salient"] = _mean(hidden)
            row["non_salient_ci95"] = [round(100 * v, 1) for v in wilson(sum(hidden), len(hidden))]
        cover = [r["coverage"][key] for r in records if key in r["coverage"]]
        if cover:
            row["target_coverage"] = _mean(cover)
            row["target_coverage_small"] = _mean(
                r["coverage"][key] for r in records if key in r["coverage"] and r["size"] == "small"
            )
        table[key] = row
    out = {
        "questions": len(records),
        "family": family,
        "saliency": SALIENCY[family],
        "kinds": kinds,
        "per_kind": {kind: sum(r["kind"] == kind for r in records) for kind in kinds},
        "small": sum(r["size"] == "small" for r in records),
        "large": sum(r["size"] == "large" for r in records),
        "mean_visual_tokens": round(sum(r["num_visual_tokens"] for r in records) / max(1, len(records)), 1),
        "accuracy": table,
    }
    out["non_salient_questions"] = sum(r.get("target_salience", 1.0) < NON_SALIENT for r in records)
    ranks = [(r["target_salience"], r["target_salience_mean"]) for r in records if "target_salience_mean" in r]
    if ranks:  # where targets rank by saliency: quartiles of their best patch's and their mean patch's rank
        out["target_salience_quartiles"] = {
            name: [round(float(q), 3) for q in _quartiles([r[i] for r in ranks])] for i, name in enumerate(("best",
                                                                                                        "mean"))
        }  # fmt: skip
    out["paired"] = paired(records)
    if records and "saliency_on_large" in records[0]:
        out["saliency_on_large_base_view"] = _mean(r["saliency_on_large"] for r in records)
        out["large_area_base_view"] = _mean(r["large_area_base"] for r in records)
    return out


def _quartiles(values: list[float]) -> list[float]:
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.25, 0.5, 0.75)]


def paired(records: list[dict], keeps=PAIRED_KEEPS) -> dict[str, dict]:
    """adafv against every other method at each of `keeps`, on the same questions (exact McNemar): adafv (exact,
    compact) against the compact methods, adafv's rows layout against fastervlm's. {"a vs b@keep": test}."""
    keys = set(records[0]["answers"]) if records else set()
    out = {}
    for keep in keeps:
        pairs = [("adafv", m) for m in METHODS if m not in ("full", "adafv") and not m.endswith(ROWS)]
        pairs.append(("adafv-rows", "fastervlm-rows"))
        for a, b in pairs:
            ka, kb = f"{a}@{keep}", f"{b}@{keep}"
            if ka in keys and kb in keys:
                right = [(r["answers"][ka] == r["answer"], r["answers"][kb] == r["answer"]) for r in records]
                test = mcnemar([x for x, _ in right], [y for _, y in right])
                out[f"{a} vs {b}@{keep}"] = {**test, "difference": round(test["difference"], 1)}
    return out


def _cell(row: dict | None, kind: str | None = None, split: bool = True) -> str:
    """`all (small / large)` of one row (`all` alone without `split`), over every question or over one kind's."""
    if row is None:
        return "–"
    keys = ("all", "small", "large") if kind is None else (kind, f"{kind}/small", f"{kind}/large")
    whole, small, large = (f"{row[k]:.1f}" if row.get(k) is not None else "–" for k in keys)
    return f"{whole} ({small} / {large})" if split else whole


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


REFERENCE_ROWS = {
    "blind": "blind: no image, most common answer per question kind",
    "layout": "all tokens in the reduced layout (reading order, no newline tokens)",
}


def _label(key: str) -> str:
    """The row label of a summary key: a reference, `full`, or `method@percent`."""
    if key in REFERENCE_ROWS or key in LABELS:
        return REFERENCE_ROWS.get(key) or LABELS[key]
    method, percent = key.split("@")
    return f"{LABELS[method]}, keep {percent}%"


def _accuracy_rows(acc: dict, methods, keeps, kind: str | None = None, split: bool = True) -> list[str]:
    """Rows of the method x keep table (references and full in the `all tokens` column)."""
    dashes = " – |" * len(keeps)
    lines = [
        "| method | all tokens | " + " | ".join(f"keep {k}%" for k in keeps) + " |",
        "|---" * (2 + len(keeps)) + "|",
    ]
    if "blind" in acc:
        lines.append(f"| {REFERENCE_ROWS['blind']} | {_cell(acc['blind'], kind, split)} |" + dashes)
    for method in methods:
        if method == "full":
            lines.append(f"| {LABELS[method]} | {_cell(acc.get('full'), kind, split)} |" + dashes)
            if "layout" in acc:
                lines.append(f"| {REFERENCE_ROWS['layout']} | {_cell(acc['layout'], kind, split)} |" + dashes)
        else:
            cells = " | ".join(_cell(acc.get(f"{method}@{k}"), kind, split) for k in keeps)
            lines.append(f"| {LABELS[method]} | – | {cells} |")
    return lines


def markdown(summary: dict, methods=METHODS, keeps=KEEPS) -> str:
    """The accuracy-vs-keep table (cells `all (small / large)` in %), the same table for colour questions, the
    accuracy by question kind, the target coverage and where the saliency looks."""
    acc = summary["accuracy"]
    kinds = summary.get("kinds", scenes.KINDS)
    split = summary["large"] > 0  # v1 asks about the large object too: cells split small / large
    if split:
        about = (f"({summary['small']} about small objects, {summary['large']} about the large one); cells: all "
                 "(small / large)")  # fmt: skip
    else:
        counts = summary.get("per_kind", {})
        about = "(all about small objects: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in kinds) + ")"
    mean = f"{summary['mean_visual_tokens']:.0f}"
    if summary.get("family", "llava_next") == qwen.FAMILY:
        layout = (f"`keep` is a share of each image's P merged visual tokens (mean P = {mean}); the kept tokens keep "
                  "their M-RoPE grid positions.")  # fmt: skip
    else:
        layout = (f"`keep` is a share of each image's N*P visual tokens (mean N*P = {mean}). Rows without 'rows "
                  "layout' feed the kept tokens in the compact layout (reading order, no newline tokens: the paper's "
                  "setting); adafv's default is now the rows layout.")  # fmt: skip
    lines = [
        f"Accuracy (%) on {summary['questions']} held-out questions {about}. {layout}",
        "",
        *_accuracy_rows(acc, methods, keeps, split=split),
    ]
    ends = list(dict.fromkeys((keeps[0], keeps[-1]) if split else keeps)) if keeps else []
    rows = [k for k in ("blind", "full", "layout", *(f"{m}@{k}" for m in methods for k in ends)) if k in acc]
    if rows:
        lines += [
            "",
            "By question kind (%), at the largest and the smallest keep:" if split else "By question kind (%):",
            "",
            "| | " + " | ".join(kinds) + " |",
            "|---" * (1 + len(kinds)) + "|",
        ]
        for key in rows:
            lines.append(f"| {_label(key)} | " + " | ".join(_pct(acc[key].get(kind)) for kind in kinds) + " |")
    if not split and "full" in acc and "blind" in acc:
        margin = " | ".join(f"{acc['full'][k] - acc['blind'][k]:+.1f}" if acc["full"].get(k) is not None
                            and acc["blind"].get(k) is not None else "–" for k in kinds)  # fmt: skip
        lines += [
            "",
            "Every token, by kind, with 95% intervals (Wilson), and the margin over a model that never looks:",
            "",
            "| | " + " | ".join(kinds) + " |",
            "|---" * (1 + len(kinds)) + "|",
            f"| {LABELS['full']} | " + " | ".join(_interval(acc["full"], k) for k in kinds) + " |",
            f"| {REFERENCE_ROWS['blind']} | " + " | ".join(_pct(acc["blind"].get(k)) for k in kinds) + " |",
            f"| margin (points) | {margin} |",
        ]
    if "full" in methods and len(keeps) and split:
        lines += ["", "Colour questions only (%): cells: all (small / large).", ""]
        lines += _accuracy_rows(acc, methods, keeps, kind="color")
    where_tokens = "merged tokens" if summary.get("family") == qwen.FAMILY else "patches (all crops)"
    cover = [m for m in methods if m != "full" and "target_coverage" in acc.get(f"{m}@{keeps[0]}", {})]
    if cover:
        lines += [
            "",
            f"Target coverage (%): share of the asked-about object's {where_tokens} that the selection keeps; "
            "cells: all (small-object questions).",
            "",
            "| method | " + " | ".join(f"keep {k}%" for k in keeps) + " |",
            "|---" * (1 + len(keeps)) + "|",
        ]
        for method in cover:
            cells = " | ".join(
                f"{acc[f'{method}@{k}']['target_coverage']:.1f} ({acc[f'{method}@{k}']['target_coverage_small']:.1f})"
                for k in keeps
            )
            lines.append(f"| {LABELS[method]} | {cells} |")
    rows_methods = [m for m in methods if m.endswith(ROWS) and f"{m}@{keeps[0]}" in acc] if keeps else []
    if rows_methods:
        added = ", ".join(
            f"{LABELS[m]}: " + " / ".join(f"{acc[f'{m}@{k}'].get('mean_newlines', 0):.1f}" for k in keeps)
            for m in rows_methods
        )
        lines += [
            "",
            "The rows layout feeds the kept tokens in their grid rows with the model's `image_newline` embedding after "
            f"each row that keeps a token; newline tokens it adds on average, keep {' / '.join(map(str, keeps))}%: "
            f"{added}.",
        ]
    lines += _intervals(summary, methods, keeps)
    if "saliency_on_large_base_view" in summary:
        lines += [
            "",
            f"Saliency ({summary.get('saliency', SALIENCY['llava_next'])}, "
            f"{'the image' if summary.get('family') == qwen.FAMILY else 'base view'}) on the large object: "
            f"{summary['saliency_on_large_base_view']:.1f}% "
            f"of its mass, on {summary['large_area_base_view']:.1f}% of the "
            f"{'tokens' if summary.get('family') == qwen.FAMILY else 'patches'}.",
        ]
    return "\n".join(lines)


def _interval(row: dict | None, key: str = "") -> str:
    """`accuracy [low, high]` of a row (its non-salient slice with key "non_salient", one kind with its name)."""
    value, ci = (row or {}).get(key or "all"), (row or {}).get(f"{key}_ci95" if key else "ci95")
    return "–" if value is None or ci is None else f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def _intervals(summary: dict, methods, keeps) -> list[str]:
    """95% intervals, the non-salient slice, and adafv's paired comparisons."""
    acc = summary["accuracy"]
    if not keeps or not any("ci95" in row for row in acc.values()):
        return []
    cue = summary.get("saliency", SALIENCY["llava_next"])
    header = ["| method | all tokens | " + " | ".join(f"keep {k}%" for k in keeps) + " |",
              "|---" * (2 + len(keeps)) + "|"]  # fmt: skip

    def rows(key: str = "") -> list[str]:
        out = []
        for name in ("blind", *methods):
            if name in ("blind", "full"):
                if name in acc:
                    label = REFERENCE_ROWS.get(name) or LABELS[name]
                    out.append(f"| {label} | {_interval(acc[name], key)} |" + " – |" * len(keeps))
            else:
                cells = " | ".join(_interval(acc.get(f"{name}@{k}"), key) for k in keeps)
                out.append(f"| {LABELS[name]} | – | {cells} |")
        return out

    lines = ["", "Accuracy (%) with 95% intervals (Wilson):", "", *header, *rows()]
    n = summary.get("non_salient_questions", 0)
    quartiles = summary.get("target_salience_quartiles")
    if not n and quartiles:
        best, mean = quartiles["best"], quartiles["mean"]
        lines += ["", f"The non-salient slice is empty: every question's target object has a patch in the image's "
                  f"top {1 - NON_SALIENT:.0%} by {cue}. Where targets rank (the share of the image's "
                  f"patches less salient than the target's best patch; quartiles): {best[0]:.2f} / {best[1]:.2f} / "
                  f"{best[2]:.2f}; its patches on average: {mean[0]:.2f} / {mean[1]:.2f} / {mean[2]:.2f}. The "
                  "scenes do not yet test the claim that text relevance rescues non-salient objects."]  # fmt: skip
    if n:
        unit = "merged token" if summary.get("family") == qwen.FAMILY else "patch"
        where = ""
        if quartiles:
            best = quartiles["best"]
            where = (f" Where all targets rank (the share of the image's {unit.replace('patch', 'patche')}s less "
                     f"salient than the target's best {unit}; quartiles): {best[0]:.2f} / {best[1]:.2f} / "
                     f"{best[2]:.2f}.")  # fmt: skip
        lines += ["", f"The non-salient slice: {n} questions whose target object has no {unit} in the image's top "
                  f"{1 - NON_SALIENT:.0%} by {cue} (a saliency-only selection keeping {1 - NON_SALIENT:.0%} "
                  f"or less keeps none of it).{where} Accuracy (%) with 95% intervals:", "", *header,
                  *rows("non_salient")]  # fmt: skip
    tests = summary.get("paired") or {}
    if tests:
        lines += ["", "adafv against each baseline on the same questions (exact McNemar test): accuracy difference "
                  "in points, questions only one of the two got right, two-sided p-value.", "",
                  "| comparison | keep | difference | adafv only / baseline only | p |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, t in tests.items():
            pair, keep = name.rsplit("@", 1)
            a, b = pair.split(" vs ")
            lines.append(f"| {LABELS[a]} vs {LABELS[b]} | {keep}% | {t['difference']:+.1f} | {t['a_only']} / "
                         f"{t['b_only']} | {t['p']:.3g} |")  # fmt: skip
    return lines


def _splice(text: str, begin: str, end: str, body: str) -> str | None:
    """`text` with everything between the markers `begin` and `end` replaced by `body`; None without markers."""
    if begin not in text or end not in text:
        return None
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}"


def _write(path: Path, text: str) -> None:
    """Write through a temp file and a rename: a reader never sees half a card or README."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


SLICE = 300  # the first held-out questions whose answers the card keeps for CI to reproduce (slice.json)
SLICE_KEYS = ("full", "adafv@10", "fastervlm@10", "text@10", "divprune@10", "random@10")
SLICE_FILE = "slice.json"


def reproduce_slice(reference, model_dir: Path) -> tuple[dict, dict]:
    """Answer the card's slice again: (stated, measured), each {key: [answer of question 0 .. SLICE-1]}."""
    stated = json.loads((model_dir / SLICE_FILE).read_text())
    methods = tuple(dict.fromkeys(key.split("@")[0] for key in stated["answers"]))
    keeps = tuple(sorted({int(key.split("@")[1]) for key in stated["answers"] if "@" in key}))
    records = measure(reference, stated["questions"], methods, keeps, progress=False, diagnostics=False)
    measured = {key: [r["answers"][key] for r in records] for key in stated["answers"]}
    return stated["answers"], measured


def write_card(model_dir: Path, table: str, summary: dict, command: str, records: list[dict] | None = None) -> None:
    """Put the table between the card's result markers and the numbers into metrics.json next to the weights; with
    `records`, the answers of the first SLICE questions under SLICE_KEYS into slice.json (what CI reproduces)."""
    from .train import RESULTS_BEGIN, RESULTS_END

    card = model_dir / "README.md"
    text = card.read_text() if card.is_file() else f"# {model_dir.name}\n"
    if RESULTS_BEGIN not in text or RESULTS_END not in text:
        text = text.rstrip("\n") + f"\n\n{RESULTS_BEGIN}\n{RESULTS_END}\n"
    _write(card, _splice(text, RESULTS_BEGIN, RESULTS_END, f"{table}\n\nReproduce:\n\n```bash\n{command}\n```"))
    _write(model_dir / METRICS_FILE, json.dumps({"command": command, **summary}, indent=2) + "\n")
    if records and all(key in records[0]["answers"] for key in SLICE_KEYS):
        answers = {key: [r["answers"][key] for r in records[:SLICE]] for key in SLICE_KEYS}
        truth = [r["answer"] for r in records[:SLICE]]
        body = {"questions": min(SLICE, len(records)), "truth": truth, "answers": answers}
        _write(model_dir / SLICE_FILE, json.dumps(body) + "\n")


README_BEGIN, README_END = "<!-- toyworld:begin -->", "<!-- toyworld:end -->"
MARKERS = {"v1": (README_BEGIN, README_END), "v2": ("<!-- toyworld-v2:begin -->", "<!-- toyworld-v2:end -->"),
           "v2-qwen2_5_vl": ("<!-- toyworld-v2-qwen:begin -->", "<!-- toyworld-v2-qwen:end -->")}  # fmt: skip


def marker_key(world_name: str, family: str = "llava_next") -> str:
    """The MARKERS key of a world's model of a family (LLaVA's by the world alone)."""
    return world_name if family == "llava_next" else f"{world_name}-{family}"


def write_readme(readme: Path, table: str, command: str, seconds: float, world_name: str = "v1",
                 family: str = "llava_next") -> bool:  # fmt: skip
    """Put the table and its command between the README's markers of the world and family (`MARKERS`); False when
    the markers are missing."""
    minutes = max(1, round(seconds / 60))
    how = f"Reproduce (about {minutes} min on 2 CPU cores):\n\n```bash\n{command}\n```"
    begin, end = MARKERS[marker_key(world_name, family)]
    text = _splice(readme.read_text() if readme.is_file() else "", begin, end, f"{table}\n\n{how}")
    if text is None:
        return False
    _write(readme, text)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adafv.eval.toyworld.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="toyworld-llava-next", help="registered name or checkpoint directory")
    parser.add_argument("--questions", type=int, default=None,
                        help=f"held-out questions (the first n; default per world: {QUESTIONS})")  # fmt: skip
    parser.add_argument("--start", type=int, default=0, help="index of the first held-out question")
    parser.add_argument("--methods", nargs="+", default=None, choices=METHODS,
                        help="default: every method of the model's family (Qwen: no rows layout)")  # fmt: skip
    parser.add_argument("--keeps", nargs="+", type=float, default=list(KEEPS), help="percent of visual tokens")
    parser.add_argument("--card", action="store_true", help="write the table into the model card and metrics.json")
    parser.add_argument("--readme", default=None, help="with --card: also put the table into this README's markers")
    parser.add_argument("--json", default=None, help="write every answer and the summary to this file")
    parser.add_argument("--text-only", action="store_true",
                        help="only the LLM alone: the scene's description in the image's place (text_only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    keeps = [int(k) if float(k).is_integer() else k for k in args.keeps]
    if args.readme and not args.card:
        parser.error("--readme needs --card (the README shows the card's full measurement)")
    from adafv.pipeline import Reference

    torch.set_num_threads(args.threads)
    reference = Reference.load(args.model)
    W = world_of(reference.loaded.spec.source)
    family = family_of(reference)
    every = methods_of(family)
    methods = every if args.methods is None else tuple(args.methods)
    if set(methods) - set(every):
        parser.error(f"{', '.join(sorted(set(methods) - set(every)))}: not a method of the {family} toy's table")
    n = QUESTIONS[W.NAME] if args.questions is None else args.questions
    if args.text_only:
        if args.card:
            parser.error("--text-only is a diagnostic: it writes no card")
        print(json.dumps(text_only(reference, n, args.start), indent=1))
        return 0
    if args.card and (n < QUESTIONS[W.NAME] or args.start != 0 or set(methods) != set(every)):
        parser.error(f"--card needs the whole measurement: --questions >= {QUESTIONS[W.NAME]}, --start 0, every method")
    t0 = time.perf_counter()
    records = measure(reference, n, methods, keeps, args.start, progress=not args.quiet)
    summary = summarize(records, W.KINDS, family)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    table = markdown(summary, [m for m in every if m in methods], keeps)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "records": records}, indent=1) + "\n")
    if args.card:
        model_dir = Path(reference.loaded.spec.source)
        command = ".venv/bin/python -m adafv.eval.toyworld.evaluate " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--quiet"
        )
        write_card(model_dir, table, summary, command.strip(), records)
        print(f"wrote {model_dir / 'README.md'} and {model_dir / METRICS_FILE}", file=sys.stderr)
        if args.readme:
            if not write_readme(Path(args.readme), table, command.strip(), summary["seconds"], W.NAME, family):
                parser.error(f"{args.readme} has no {' ... '.join(MARKERS[marker_key(W.NAME, family)])} markers")
            print(f"wrote {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
