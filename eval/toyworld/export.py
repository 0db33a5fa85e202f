"""Write toy-world scenes and their questions as files, for the commands that read data from disk: `adafv eval`
(`answer`), calibration and the precision report (`split`: training scenes for calibration, held-out scenes for the
report; or the held-out scenes alternating).

    python -m adafv.eval.toyworld.export --out DIR [--questions 600] [--start 0] [--calibration N] [--world v2]

Writes DIR/images/toyworld-<seed>.png and DIR/questions.jsonl (`image`, `question`, `answer`, `kind`, `size`,
`split`). The held-out set is the one the toy-world measurement uses (`scenes.heldout`), never seen in training.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import WORLDS, scenes, world


def export(out: Path, questions: int = 600, start: int = 0, calibration: int = 0, world=scenes) -> Path:
    """`questions` held-out samples (from `start`) of a world (`scenes`, v1, or `scenes_v2`); with `calibration` > 0,
    that many training samples come first as the `calibration` split and every held-out one is `heldout` (else the
    two splits alternate)."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    train = [(*world.sample(seed), "calibration") for seed in range(calibration)]
    held = [(s, q, "heldout" if calibration or i % 2 else "calibration")
            for i, (s, q) in enumerate(world.heldout(questions, start=start))]  # fmt: skip
    rows = []
    for i, (scene, question, split) in enumerate(train + held):
        name = f"images/toyworld-{scene.seed}.png"
        if not (out / name).is_file():
            scene.image.save(out / name)
        rows.append({"id": i, "image": name, "question": question.text, "answer": question.answer,
                     "kind": question.kind, "size": question.size, "split": split})  # fmt: skip
    path = out / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adafv.eval.toyworld.export", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--questions", type=int, default=600)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--calibration", type=int, default=0, help="training scenes first, as the calibration split")
    parser.add_argument("--world", default="v1", choices=WORLDS, help="v1 (scenes.py) or v2 (scenes_v2.py)")
    args = parser.parse_args(argv)
    print(export(args.out, args.questions, args.start, args.calibration, world(args.world)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
