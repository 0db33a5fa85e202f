"""Stage 0 alone, measured per question kind: can the LLM answer from the scene given as text, before any image?

    .venv/bin/python -m adafv.eval.toyworld.stage0                        # v2's stage 0 (object tokens, place first)
    .venv/bin/python -m adafv.eval.toyworld.stage0 --object-tokens 0 --stage0-place-steps 0 --stage0-steps 6000
    .venv/bin/python -m adafv.eval.toyworld.stage0 --family qwen2_5_vl    # the Qwen toy's LLM and stage 0
    .venv/bin/python -m adafv.eval.toyworld.stage0 --family qwen2_5_vl --ground-position 0 --stage0-steps 0

Builds a fresh toy model of a family, runs `train.stage0` with v2's settings (any `--name value` overrides one, as in
`train`), then asks the first `--questions` held-out questions with the scene in the image's place exactly as stage 0
fed it (`train.described`: the description's words, or object tokens; `--ground-position 0`: Qwen's without the
quadrant word, the M-RoPE cell its only place) and prints the accuracy per kind (JSON; Qwen's object grid also
`accuracy_pruned`, each grid reduced as `train.pruned` reduces it):
teacher-forced, the first answer token (every answer is one word), batched. A kind the LLM cannot answer here it
cannot answer from the image either, whatever the vision side or the selection does: this is the test to run
before spending the image stages on a change (docs/results/toyworld.md has the measurements). For a shipped
model's LLM after every stage use `evaluate --text-only` instead (greedy, on the checkpoint).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import random
import time

import torch

from . import scenes_v2
from .model import FAMILIES, build
from .train import IGNORE, Settings, defaults, described, forward, freeze, render, stage0


@torch.no_grad()
def measure(model, processor, settings: Settings, n: int, batch: int = 50, prune: bool = False) -> dict:
    """Accuracy (%) per kind and overall on the first n held-out v2 questions, the first answer token
    teacher-forced, with the scene as stage 0 feeds it (`prune`: Qwen's grid reduced as `train.pruned` reduces it,
    seeded, every scene)."""
    model.eval()
    embed = model.get_input_embeddings()
    right = collections.defaultdict(list)
    rows, grids, kinds = [], [], []
    rng = random.Random("stage0:measure:prune") if prune else None
    if prune:
        settings = dataclasses.replace(settings, stage0_prune=1.0)

    def flush():
        out, labels = forward(model, settings, embed, rows, grids)
        for b, (pre, middle, _, _, post_labels) in enumerate(rows):
            at = len(pre) + middle.shape[0] + next(i for i, y in enumerate(post_labels) if y != IGNORE)  # answer
            ok = int(out.logits[b, at - 1].argmax()) == int(labels[b, at])
            right[kinds[b]].append(ok)
            right["all"].append(ok)
        rows.clear(), grids.clear(), kinds.clear()

    for scene, question in scenes_v2.heldout(n):
        pre, post, labels = render(processor, [(question.text, question.answer)])
        middle, middle_labels, grid = described(scene, processor, embed, settings, rng)
        rows.append((pre, middle, middle_labels, post, labels))
        grids.append(grid)
        kinds.append(question.kind)
        if len(rows) == batch:
            flush()
    if rows:
        flush()
    return {kind: round(100 * sum(oks) / len(oks), 1) for kind, oks in right.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adafv.eval.toyworld.stage0", description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="llava_next", choices=FAMILIES)
    parser.add_argument("--questions", type=int, default=600, help="held-out v2 questions (the first n)")
    parser.add_argument("--layers", type=int, default=None, help="LLM layers (default: the toy's 4)")
    parser.add_argument("--text", default=None, metavar="JSON",
                        help='overrides of the LLM config, e.g. \'{"num_attention_heads": 2}\'')  # fmt: skip
    names = ("seed", "batch", "turns", "warmup", "threads", "stage0_steps", "stage0_lr", "stage0_place_steps",
             "object_tokens", "stage0_prune", "ground_position")  # fmt: skip
    for field in dataclasses.fields(Settings):
        if field.name in names:
            kind = int if field.type == "int" else float
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=None,
                                help=f"v2 default {getattr(defaults('v2'), field.name)}")  # fmt: skip
    args = parser.parse_args(argv)
    if args.questions < 1:
        parser.error("--questions must be at least 1")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    settings = dataclasses.replace(defaults("v2", args.family), **given)
    if args.layers is not None:
        settings = dataclasses.replace(settings, text={**settings.text, "num_hidden_layers": args.layers})
    if args.text is not None:
        try:
            text = json.loads(args.text)
        except json.JSONDecodeError as e:
            parser.error(f"--text is not JSON: {e}")
        if not isinstance(text, dict):
            parser.error("--text must be a JSON object of LLM config entries")
        settings = dataclasses.replace(settings, text={**settings.text, **text})
    previous = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        t0 = time.perf_counter()
        torch.manual_seed(settings.seed)
        model, processor = build(settings.seed, settings.vision, settings.text, scenes_v2, settings.family)
        freeze(model, tower=True, llm=False)
        model.train()
        report = stage0(model, processor, settings, None)
        accuracy = measure(model, processor, settings, args.questions)
        grid = settings.family == "qwen2_5_vl" and settings.object_tokens
        reduced = measure(model, processor, settings, args.questions, prune=True) if grid else None
    finally:
        torch.set_num_threads(previous)
    out = {"family": settings.family, "questions": args.questions, "accuracy": accuracy, "training": report,
           **({"accuracy_pruned": reduced} if reduced else {}),
           "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k in names or k == "text"},
           "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
