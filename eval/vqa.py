"""`adafv eval`: LLaVA-style VQA accuracy under token reduction, on a bundle (the runtime) or on the PyTorch reference.

    adafv eval --model MODEL|BUNDLE --data FILE.jsonl [--method adafv,fastervlm:compact] [--keep 64,10%] [--out DIR]

Data: one JSON object per line, `{"image": PATH, "question": TEXT, "answer": TEXT | [TEXT, ...]}` (paths relative to
the file's folder), plus POPE's `"label": "yes" | "no"`, and an optional `"id"`. `adafv convert gqa|pope|textvqa`
writes such files from the public downloads (GQA testdev-balanced, POPE, TextVQA val) that a user points it at.

Each question gets LLaVA's evaluation suffix ("Answer the question using a single word or phrase."), greedy
decoding, and the answer normalisation of the VQA evaluation as LLaVA uses it (lower case, punctuation dropped,
number words to digits, articles dropped). Scores: exact match (VQA accuracy, min(1, matches / 3), where a question
has ten reference answers as in TextVQA), yes/no accuracy, and for POPE precision / recall / F1 with "yes" as the
positive class. Every method and keep is also a ratio to `full` (all tokens, the stock features). Resumable: answers
are appended per question to `<out>/answers/<run>.jsonl` (with the kept positions), and questions already answered
are skipped.

On the reference path a method may carry options after colons: `adafv:paper` (mode), `fastervlm:compact` (layout),
`adafv:paper:compact`; a keep may be a share of each image's visual tokens, `10%` (round(10% of N*P), at least 1),
as well as a count. `random` draws with the question's line number as its seed: one reproducible draw per question.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

from adafv.errors import AdafvError

SUFFIX = "Answer the question using a single word or phrase."
NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
           "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~|:']")


class DataError(AdafvError, ValueError):
    """A data file line that cannot be evaluated (missing field, unreadable image path)."""


def normalize(answer: str) -> str:
    """The VQA evaluation's normalisation: lower case, no punctuation (a period only where it is not a decimal
    point), number words as digits, no articles, single spaces."""
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _PUNCT.sub(" ", text)
    text = re.sub(r"(?<!\d)\.(?!\d)", " ", text)
    words = [NUMBERS.get(w, w) for w in text.split() if w not in ARTICLES]
    return " ".join(words)


def load(path: Path) -> list[dict[str, Any]]:
    """Read and check a JSONL data file; image paths resolved against its folder."""
    items = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not JSON ({e.msg})") from e
        missing = [k for k in ("image", "question", "answer") if k not in item]
        if missing:
            raise DataError(f"{path}:{n}: missing {', '.join(missing)}")
        image = Path(item["image"])
        item["image"] = str(image if image.is_absolute() else Path(path).parent / image)
        item.setdefault("id", n)
        items.append(item)
    if not items:
        raise DataError(f"{path} holds no questions")
    return items


def score(prediction: str, answer) -> float:
    """1 / 0 for exact match; VQA accuracy, min(1, matches / 3), against a list of reference answers."""
    got = normalize(prediction)
    if isinstance(answer, list):
        matches = sum(got == normalize(a) for a in answer)
        return min(1.0, matches / 3) if len(answer) >= 3 else float(matches > 0)
    return float(got == normalize(str(answer)))


def _yes_no(text: str) -> str | None:
    words = normalize(text).split()
    return words[0] if words and words[0] in ("yes", "no") else None


def metrics(items: list[dict], predictions: dict) -> dict[str, Any]:
    """Accuracy, yes/no accuracy and (when items carry POPE labels) precision / recall / F1 / yes-ratio."""
    done = [it for it in items if str(it["id"]) in predictions]
    out: dict[str, Any] = {"questions": len(done)}
    if not done:
        return out
    out["accuracy"] = 100 * sum(score(predictions[str(it["id"])], it["answer"]) for it in done) / len(done)
    yes_no = [it for it in done if not isinstance(it["answer"], list) and normalize(it["answer"]) in ("yes", "no")]
    if yes_no:
        right = sum(_yes_no(predictions[str(it["id"])]) == normalize(it["answer"]) for it in yes_no)
        out["yes_no_accuracy"] = 100 * right / len(yes_no)
    labelled = [it for it in done if "label" in it]
    if labelled:
        said = [_yes_no(predictions[str(it["id"])]) == "yes" for it in labelled]
        truth = [normalize(it["label"]) == "yes" for it in labelled]
        tp = sum(s and t for s, t in zip(said, truth))
        precision = tp / max(sum(said), 1)
        recall = tp / max(sum(truth), 1)
        out.update({
            "precision": 100 * precision,
            "recall": 100 * recall,
            "f1": 100 * (2 * precision * recall / (precision + recall) if precision + recall else 0.0),
            "yes_ratio": 100 * sum(said) / len(said),
        })  # fmt: skip
    return out


def parse_method(spec: str) -> tuple[str, dict[str, str]]:
    """`adafv:paper:compact` -> ("adafv", {"mode": "paper", "layout": "compact"}): a method and its options (a mode
    only for adafv, the one method that has two)."""
    from adafv.config import LAYOUTS, METHODS, MODES

    method, *options = spec.split(":")
    if method not in METHODS:
        raise DataError(f"unknown method {method!r} in {spec!r}; choose from {', '.join(METHODS)}")
    fields: dict[str, str] = {}
    for option in options:
        field = "mode" if option in MODES and method == "adafv" else "layout" if option in LAYOUTS else None
        if field is None or field in fields:
            modes = f"one mode ({', '.join(MODES)}, adafv only) and " if method == "adafv" else ""
            raise DataError(f"{spec!r}: options are {modes}one layout ({', '.join(LAYOUTS)}), got {option!r}")
        fields[field] = option
    return method, fields


def run_name(method: str, fields: dict[str, str], keep: int | str) -> str:
    """The one name of a (method, options, keep): options in a fixed order, so spellings of a run share its file."""
    return ":".join([method, *(fields[f] for f in ("mode", "layout") if f in fields)]) + f"@{keep}"


def parse_keep(text: str) -> int | str:
    """`64` -> 64; `10%` -> "10%" (a share of each image's N*P visual tokens, 0 < share <= 100)."""
    text = str(text).strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            share = -1.0
        if not 0 < share <= 100:
            raise DataError(f"a keep share is a percentage in (0, 100], got {text!r}")
        return f"{share:g}%"
    if not text.isdigit() or int(text) < 1:
        raise DataError(f"keep is a positive integer or a percentage like 10%, got {text!r}")
    return int(text)


def keep_for(keep: int | str, num_tokens: int) -> int:
    """The budget of one image: a count as it is, a share as round(share of N*P), at least 1."""
    if isinstance(keep, str):
        return max(1, round(float(keep[:-1]) / 100 * num_tokens))
    return keep


def _run_file(out: Path, run: str) -> Path:
    return out / "answers" / f"{run.replace('@', '-k').replace('%', 'pc').replace(':', '-')}.jsonl"


def answers(out: Path, run: str) -> dict[str, dict]:
    """The answer rows of one run so far: `id` -> `{"id", "prediction", "kept", "visual_tokens",
    "llm_visual_tokens"}`."""
    done = {}
    path = _run_file(out, run)
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[str(row["id"])] = row
    return done


def evaluate(
    model,
    data: Path,
    methods: list[str],
    keeps: list[int | str],
    out: Path,
    max_new_tokens: int = 16,
    suffix: str | None = SUFFIX,
    limit: int | None = None,
    progress: bool = True,
    full: bool = True,
) -> dict[str, Any]:
    """Answer every question with every (method, keep) (and `full`, unless `full=False`), resumably; returns and
    writes the results. `model`: a bundle folder, a model name or folder, or an already loaded
    `adafv.pipeline.Reference`. Methods and keeps as the CLI takes them (`adafv:compact`, 64, "10%")."""
    from adafv.runtime import load_image

    suffix = SUFFIX if suffix is None else suffix
    bundle = isinstance(model, (str, Path)) and (Path(model) / "manifest.json").is_file()
    keeps = list(dict.fromkeys(parse_keep(k) for k in keeps))  # checked, "10.0%" == "10%", each once
    specs = {}  # run name -> (method, options, keep), each run once however it was spelled
    for m in methods:
        for k in keeps:
            method, fields = parse_method(m)
            if method != "full":
                specs.setdefault(run_name(method, fields, k), (method, fields, k))
    if bundle and any(isinstance(k, str) for k in keeps):
        raise DataError("a bundle answers with its own keep: shares like 10% are for models (the reference path)")
    items = load(data)[:limit]
    out.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[str, Any]] = []  # (name, answer(image, question, line, analysis) -> result)
    reference = None
    if bundle:
        from adafv.runtime import Pipeline

        pipe = Pipeline.load(model)
        sel = pipe.manifest["selection"]
        runs.append((f"{sel['method']}@{sel['keep']}", lambda image, q, n, _: pipe.run(image, q, max_new_tokens)))
    else:
        from adafv import AdaFVConfig
        from adafv.pipeline import Reference

        reference = Reference.load(model) if isinstance(model, (str, Path)) else model
        if full:
            specs = {"full": ("full", {}, 1), **specs}
        for name, (method, fields, keep) in specs.items():

            def answer(image, q, n, analysis, method=method, fields=fields, keep=keep):
                budget = keep_for(keep, analysis.saliency.numel())  # a share of this image's N*P, or a count
                config = AdaFVConfig(keep=budget, method=method, seed=n, **fields)
                return reference.answer(analysis, config, max_new_tokens)

            runs.append((name, answer))
    start = time.perf_counter()
    name = model if isinstance(model, (str, Path)) else model.loaded.spec.name
    results: dict[str, Any] = {"model": str(name), "data": str(data), "path": "bundle" if bundle else "reference",
                               "suffix": suffix, "runs": {}}  # fmt: skip
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    done = {name: answers(out, name) for name, _ in runs}
    columns = [TextColumn("{task.description:24s}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress) as bar, contextlib.ExitStack() as files:
        tasks, sinks = {}, {}
        for name, _ in runs:
            left = sum(str(it["id"]) not in done[name] for it in items)
            tasks[name] = bar.add_task(name, total=len(items), completed=len(items) - left)
            _run_file(out, name).parent.mkdir(parents=True, exist_ok=True)
            sinks[name] = files.enter_context(_run_file(out, name).open("a"))
        for n, it in enumerate(items):  # question by question: the image and the tower once for every run
            todo = [(name, answer) for name, answer in runs if str(it["id"]) not in done[name]]
            if not todo:
                continue
            image = load_image(it["image"])
            question = f"{it['question']}\n{suffix}" if suffix else it["question"]
            analysis = reference.analyse(image, question) if reference is not None else None
            for name, answer in todo:
                result = answer(image, question, n, analysis)
                row = {"id": it["id"], "prediction": result["text"], "kept": result["kept_positions"],
                       "visual_tokens": result["num_visual_tokens"],
                       "llm_visual_tokens": result.get("num_llm_visual_tokens")}  # fmt: skip
                if name == "full":
                    del row["kept"]  # every position
                sinks[name].write(json.dumps(row) + "\n")
                sinks[name].flush()  # resumable at every question
                done[name][str(it["id"])] = row
                bar.advance(tasks[name])
    for name, _ in runs:
        results["runs"][name] = metrics(items, {k: row["prediction"] for k, row in done[name].items()})
    full = results["runs"].get("full")
    if full:
        for row in results["runs"].values():
            row["ratio_to_full"] = {k: row[k] / full[k] for k in row if k in full and k != "questions" and full[k]}
    results["seconds"] = round(time.perf_counter() - start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    keys = [k for k in ("accuracy", "yes_no_accuracy", "precision", "recall", "f1", "yes_ratio")
            if any(k in r for r in results["runs"].values())]  # fmt: skip
    lines = [
        f"{results['model']} on {results['data']} ({results['path']} path); % (ratio to full)",
        "",
        "| method @ keep | questions | " + " | ".join(keys) + " |",
        "|---" * (2 + len(keys)) + "|",
    ]
    for name, row in results["runs"].items():
        ratio = row.get("ratio_to_full", {})
        cells = [f"{row[k]:.1f}" + (f" ({ratio[k]:.2f})" if k in ratio else "") if k in row else "–" for k in keys]
        lines.append(f"| {name} | {row['questions']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- converters from the public formats ------------------------------------------------------------------------------


def convert(kind: str, source: Path, images: Path, out: Path) -> int:
    """Write a JSONL data file from a public benchmark's own files; returns the number of questions."""
    source, images = Path(source), Path(images)
    rows = []
    if kind == "gqa":  # testdev_balanced_questions.json: {qid: {"imageId", "question", "answer", ...}}
        for qid, q in json.loads(source.read_text()).items():
            rows.append({"id": qid, "image": str(images / f"{q['imageId']}.jpg"), "question": q["question"],
                         "answer": q["answer"]})  # fmt: skip
    elif kind == "pope":  # one JSON per line: {"question_id", "image", "text", "label"}
        for line in source.read_text().splitlines():
            if line.strip():
                q = json.loads(line)
                rows.append({"id": q["question_id"], "image": str(images / q["image"]), "question": q["text"],
                             "answer": q["label"], "label": q["label"]})  # fmt: skip
    elif kind == "textvqa":  # TextVQA_0.5.1_val.json: {"data": [{"question_id", "image_id", "question", "answers"}]}
        for q in json.loads(source.read_text())["data"]:
            rows.append({"id": q["question_id"], "image": str(images / f"{q['image_id']}.jpg"),
                         "question": q["question"], "answer": q["answers"]})  # fmt: skip
    else:
        raise DataError(f"unknown format {kind!r}; choose gqa, pope, textvqa")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)
