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

from adafv.datafile import jsonl, local_path, parse_json, read_text
from adafv.errors import DataError

SUFFIX = "Answer the question using a single word or phrase."
NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
           "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~|:']")


def normalize(answer: str) -> str:
    """The VQA evaluation's normalisation: lower case, no punctuation (a period only where it is not a decimal
    point), number words as digits, no articles, single spaces."""
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _PUNCT.sub(" ", text)
    text = re.sub(r"(?<!\d)\.(?!\d)", " ", text)
    words = [NUMBERS.get(w, w) for w in text.split() if w not in ARTICLES]
    return " ".join(words)


def load(path: Path) -> list[dict[str, Any]]:
    """Read and check a whole JSONL data file before anything is answered; image paths resolved against its folder
    (and checked to exist). Ids default to the line number; an id seen twice is refused."""
    path = Path(path)
    items, seen = [], {}
    for n, item in jsonl(path, "data file", "{image, question, answer}"):
        where = f"{path}:{n}"
        missing = [k for k in ("image", "question", "answer") if k not in item]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)}")
        for key in ("image", "question"):
            if not isinstance(item[key], str) or not item[key].strip():
                raise DataError(f"{where}: {key!r} must be a non-empty string, got {item[key]!r:.60}")
        answer = item["answer"]
        if not (isinstance(answer, str) or (isinstance(answer, list) and answer
                                             and all(isinstance(a, str) for a in answer))):  # fmt: skip
            raise DataError(f"{where}: 'answer' must be a string or a non-empty list of strings, got {answer!r:.60}")
        if "label" in item and (not isinstance(item["label"], str) or normalize(item["label"]) not in ("yes", "no")):
            raise DataError(f"{where}: 'label' must be \"yes\" or \"no\", got {item['label']!r:.60}")
        ident = item.setdefault("id", n)
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise DataError(f"{where}: 'id' must be a string or an integer, got {ident!r:.60}")
        if str(ident) in seen:
            raise DataError(f"{where}: id {ident!r} is also line {seen[str(ident)]}'s (ids default to the line "
                            "number): give each question its own id")  # fmt: skip
        seen[str(ident)] = n
        image = local_path(path, item["image"])
        if not image.is_file():
            raise DataError(f"{where}: image {image} {'is not a file' if image.exists() else 'not found'}")
        item["image"] = str(image)
        items.append(item)
    if not items:
        raise DataError(f"{path} holds no questions")
    return items


FIT = "images of another aspect centre-cropped to the bundle's (the largest crop; within one merge cell: as is)"


def _fitted(image, spec: dict):
    """The image a fixed-resolution bundle can take without distortion: as is when its aspect fits (what
    `adafv run` takes), else the largest centred crop of the bundle's aspect (as calibration does)."""
    from adafv.runtime.errors import ImageError
    from adafv.runtime.preprocess import check_aspect, crop_to_aspect

    if "resolution" not in spec:
        return image
    try:
        check_aspect(image.size, spec)
        return image
    except ImageError:
        return crop_to_aspect(image, spec)


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


LOG_FORMAT = 2  # 2: a header line with the run's identity, each row with its question's content hash


class AnswerLog:
    """One run's answers, appended a question at a time (resumable), under the identity of everything that changes
    an answer: the model (a bundle's manifest digest, or a checkpoint's fingerprint), the method, its options, the
    keep, the generation settings, the suffix. The first line holds that identity; a resumed run with another one is
    refused in one line naming what differs. Each row carries its question's content hash (image bytes, question
    text, and the seed where the method draws): a row for a question that changed is refused the same way. A torn
    last line (power cut, full disk) is dropped with a warning."""

    def __init__(self, path: Path, identity: dict[str, Any]):
        self.path, self.identity = path, identity
        self.rows: dict[str, dict] = {}
        self._file = None

    @classmethod
    def open(cls, path: Path, identity: dict[str, Any]) -> AnswerLog:
        log = cls(path, identity)
        if path.exists() and not path.is_file():
            raise DataError(f"{path} is not a file: use another --out")
        if path.is_file() and path.stat().st_size:
            log._read()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            header = {"adafv_eval": LOG_FORMAT, "identity": identity}
            path.write_text(json.dumps(header) + "\n")
        return log

    def _read(self) -> None:
        import warnings

        raw = self.path.read_bytes()
        *lines, tail = raw.split(b"\n")  # tail: what follows the last newline (empty unless a write was cut)
        if tail:
            lines.append(tail)
        good, header = 0, None  # good: bytes of whole, parsed lines
        for i, line in enumerate(lines):
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError
            except (ValueError, RecursionError):
                if i < len(lines) - 1:
                    raise DataError(f"{self.path}:{i + 1}: not a JSON answer row: the file is damaged; remove it or "
                                    "use another --out") from None  # fmt: skip
                warnings.warn(f"{self.path}: its last line is torn (an interrupted write): dropped, and that question "
                              "is answered again", EvalWarning, stacklevel=3)  # fmt: skip
                with self.path.open("r+b") as f:
                    f.truncate(good)
                break
            if line is tail:  # whole JSON, only its newline was lost
                with self.path.open("ab") as f:
                    f.write(b"\n")
            good += len(line) + 1
            if header is None:
                header = row
                self._check_header(header)
            else:
                self.rows[str(row.get("id"))] = row
        if header is None:  # nothing whole survived: start the file again
            self.path.write_text(json.dumps({"adafv_eval": LOG_FORMAT, "identity": self.identity}) + "\n")

    def _check_header(self, header: dict) -> None:
        if header.get("adafv_eval") != LOG_FORMAT:
            raise DataError(f"{self.path} was written by another version of adafv eval (no run identity): its answers "
                            "cannot be trusted for this run; remove it or use another --out")  # fmt: skip
        theirs = header.get("identity", {})
        if theirs != self.identity:
            diffs = [f"{k}={theirs.get(k)!r:.80}, not {v!r:.80}" for k, v in self.identity.items()
                     if theirs.get(k) != v]  # fmt: skip
            diffs += [f"{k}={theirs[k]!r:.80}" for k in theirs if k not in self.identity]
            raise DataError(f"{self.path} holds answers of another configuration ({'; '.join(diffs)}): use another "
                            "--out, or remove it to answer again")  # fmt: skip

    def done(self, ident, content: str) -> bool:
        """Whether the question is answered; a row answered for other content is refused."""
        row = self.rows.get(str(ident))
        if row is None:
            return False
        if row.get("content") != content:
            raise DataError(f"{self.path}: question id {ident!r} was answered for another image or question (the "
                            "data file changed): use another --out, or remove it to answer again")  # fmt: skip
        return True

    def append(self, row: dict) -> None:
        if self._file is None:
            self._file = self.path.open("a")
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()  # resumable at every question
        self.rows[str(row["id"])] = row

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class EvalWarning(UserWarning):
    """Something adafv eval repaired on its own (a torn last answer line)."""


def answers(out: Path, run: str) -> dict[str, dict]:
    """The answer rows of one run so far: `id` -> `{"id", "content", "prediction", "kept", "visual_tokens",
    "llm_visual_tokens"}`."""
    done = {}
    path = _run_file(out, run)
    if path.is_file():
        for line in path.read_text().splitlines()[1:]:
            if line.strip():
                row = json.loads(line)
                done[str(row["id"])] = row
    return done


def _content(item: dict, images: dict[str, str], seed: int | None) -> str:
    """A question's content hash: its image's bytes, its text, and the seed a random method draws with."""
    import hashlib

    if item["image"] not in images:
        images[item["image"]] = _file_sha256(item["image"])
    text = json.dumps([images[item["image"]], item["question"], seed])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _file_sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def default_out(model, data: Path) -> Path:
    """eval-results/<data name>/<model name>: two models on one data file keep their answers apart (not eval/: the
    package's folder in a checkout)."""
    from adafv.runtime.manifest import is_bundle

    name = Path(str(model)).name if is_bundle(model) else str(model)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
    return Path("eval-results") / Path(data).stem / safe


def _model_identity(model, bundle: bool, reference) -> dict[str, Any]:
    if bundle:
        from adafv.runtime import manifest as bundle_format

        manifest = bundle_format.read_manifest(Path(model))
        return {"path": "bundle", "model": manifest["model"]["name"], "bundle": manifest[bundle_format.DIGEST]}
    from adafv.models import fingerprint

    spec = reference.loaded.spec
    return {"path": "reference", "model": spec.name, "weights": fingerprint(spec)}


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
    `adafv.pipeline.Reference`. Methods and keeps as the CLI takes them (`adafv:compact`, 64, "10%"). Everything is
    checked before the model loads: the options, the whole data file, the output folder."""
    from adafv.runtime import load_image

    suffix = SUFFIX if suffix is None else suffix
    if not isinstance(suffix, str):
        raise DataError(f"the suffix must be a string, got {type(suffix).__name__}")
    from adafv.runtime.manifest import is_bundle

    bundle = isinstance(model, (str, Path)) and is_bundle(model)
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
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is an existing file: name a folder (results and answers go into it)")
    runs: list[tuple[str, dict, Any]] = []  # (name, identity, answer(image, question, line, analysis) -> result)
    cropped: set[int] = set()  # lines whose image a fixed-resolution bundle took centre-cropped to its aspect
    reference = None
    generation = {"max_new_tokens": max_new_tokens, "suffix": suffix}
    if bundle:
        from adafv.runtime import Pipeline

        pipe = Pipeline.load(model)
        sel = pipe.manifest["selection"]
        identity = {**_model_identity(model, True, None), "method": sel["method"], "mode": sel["mode"],
                    "keep": sel["keep"], **generation}  # fmt: skip
        spec = pipe.manifest["preprocess"]
        if "resolution" in spec:  # a fixed-resolution (Qwen) bundle: another aspect is centre-cropped to its own
            identity["fit"] = FIT

        def ask(image, q, n, _):
            fitted = _fitted(image, spec)
            if fitted is not image:
                cropped.add(n)
            return pipe.run(fitted, q, max_new_tokens)

        runs.append((f"{sel['method']}@{sel['keep']}", identity, ask))
    else:
        from adafv import AdaFVConfig
        from adafv.pipeline import Reference

        reference = Reference.load(model) if isinstance(model, (str, Path)) else model
        base = _model_identity(model, False, reference)
        if full:
            specs = {"full": ("full", {}, 1), **specs}
        for name, (method, fields, keep) in specs.items():

            def answer(image, q, n, analysis, method=method, fields=fields, keep=keep):
                budget = keep_for(keep, analysis.saliency.numel())  # a share of this image's N*P, or a count
                config = AdaFVConfig(keep=budget, method=method, seed=n, **fields)
                return reference.answer(analysis, config, max_new_tokens)

            defaults = AdaFVConfig(keep=1, method=method, **fields)
            identity = {**base, "method": method, "mode": defaults.mode, "layout": defaults.layout,
                        "keep": keep if method != "full" else None, **generation}  # fmt: skip
            runs.append((name, identity, answer))
    start = time.perf_counter()
    name = model if isinstance(model, (str, Path)) else model.loaded.spec.name
    results: dict[str, Any] = {"model": str(name), "data": str(data), "path": "bundle" if bundle else "reference",
                               "suffix": suffix, "runs": {}}  # fmt: skip
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}  # image path -> sha256 of its bytes
    columns = [TextColumn("{task.description:24s}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress) as bar, contextlib.ExitStack() as stack:
        logs = {}
        for name, identity, _ in runs:
            logs[name] = AnswerLog.open(_run_file(out, name), identity)
            stack.callback(logs[name].close)
        contents = {name: [_content(it, images, n if name.startswith("random") else None) for n, it in
                           enumerate(items)] for name, _, _ in runs}  # fmt: skip
        tasks = {}
        for name, _, _ in runs:
            answered = sum(logs[name].done(it["id"], contents[name][n]) for n, it in enumerate(items))
            tasks[name] = bar.add_task(name, total=len(items), completed=answered)
        for n, it in enumerate(items):  # question by question: the image and the tower once for every run
            todo = [(name, answer) for name, _, answer in runs if not logs[name].done(it["id"], contents[name][n])]
            if not todo:
                continue
            image = load_image(it["image"])
            question = f"{it['question']}\n{suffix}" if suffix else it["question"]
            analysis = reference.analyse(image, question) if reference is not None else None
            for name, answer in todo:
                result = answer(image, question, n, analysis)
                row = {"id": it["id"], "content": contents[name][n], "prediction": result["text"],
                       "kept": result["kept_positions"], "visual_tokens": result["num_visual_tokens"],
                       "llm_visual_tokens": result.get("num_llm_visual_tokens")}  # fmt: skip
                if name == "full":
                    del row["kept"]  # every position
                logs[name].append(row)
                bar.advance(tasks[name])
        done = {name: {str(it["id"]): logs[name].rows[str(it["id"])] for it in items} for name, _, _ in runs}
    for name, _, _ in runs:
        results["runs"][name] = metrics(items, {k: row["prediction"] for k, row in done[name].items()})
    if bundle and "fit" in runs[0][1]:
        results["fit"] = {"rule": FIT, "cropped_images_this_run": len(cropped)}
    full = results["runs"].get("full")
    if full:
        for row in results["runs"].values():
            row["ratio_to_full"] = {k: row[k] / full[k] for k in row if k in full and k != "questions" and full[k]}
    results["seconds"] = round(time.perf_counter() - start, 1)
    from .outputs import write_atomic

    write_atomic(out / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2)))
    write_atomic(out / "results.md", lambda tmp: tmp.write_text(markdown(results)))
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


FORMATS = ("gqa", "pope", "textvqa")


def convert(kind: str, source: Path, images: Path, out: Path, force: bool = False) -> int:
    """Write a JSONL data file from a public benchmark's own files; returns the number of questions. The whole source
    is checked before anything is written (one DataError line naming the file, the question and the field); `out`
    follows eval.outputs' rule: never the source, never an existing file unless `force`, written atomically."""
    from .outputs import check_output, write_atomic

    if kind not in FORMATS:
        raise DataError(f"unknown format {kind!r}; choose {', '.join(FORMATS)}")
    source, images, out = Path(source), Path(images), Path(out)
    check_output(out, command="adafv convert", inputs=[source], suffixes=(".jsonl",), force=force)
    if not images.is_dir():
        raise DataError(f"--images {images}: {'not a folder' if images.exists() else 'no such folder'} (the folder "
                        "holding the benchmark's images)")  # fmt: skip
    text = read_text(source, "source")
    rows = _CONVERTERS[kind](source, text, images)
    if not rows:
        raise DataError(f"{source} holds no questions")
    seen: set[str] = set()
    for row in rows:
        if str(row["id"]) in seen:
            raise DataError(f"{source}: question id {row['id']!r} appears twice")
        seen.add(str(row["id"]))
    write_atomic(out, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"))
    return len(rows)


def _field(source: Path, q, key: str, kind, label: str):
    """q[key], checked to be of `kind` (a non-empty string, where str)."""
    if not isinstance(q, dict):
        raise DataError(f"{source}: {label} is a JSON {type(q).__name__}, not an object")
    if key not in q:
        raise DataError(f"{source}: {label} has no {key!r}")
    value = q[key]
    ok = (isinstance(value, kind) and not isinstance(value, bool)) and (not isinstance(value, str) or value.strip())
    if not ok:
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(f"{source}: {label}: {key!r} must be a non-empty {names}, got {value!r:.60}")
    return value


def _image_name(source: Path, q, key: str, label: str, suffix: str = "") -> str:
    name = str(_field(source, q, key, (str, int), label)) + suffix
    if Path(name).is_absolute() or ".." in Path(name).parts or "\x00" in name:
        raise DataError(f"{source}: {label}: {key!r} must name a file inside --images, got {name!r:.60}")
    return name


def _gqa(source: Path, text: str, images: Path) -> list[dict]:
    """testdev_balanced_questions.json: {qid: {"imageId", "question", "answer", ...}}."""
    data = parse_json(source, text)
    if not isinstance(data, dict):
        raise DataError(f"{source}: a GQA questions file is one JSON object of questions by id, got a "
                        f"{type(data).__name__}")  # fmt: skip
    rows = []
    for qid, q in data.items():
        label = f"question {qid!r}"
        rows.append({"id": qid, "image": str(images / _image_name(source, q, "imageId", label, ".jpg")),
                     "question": _field(source, q, "question", str, label),
                     "answer": _field(source, q, "answer", str, label)})  # fmt: skip
    return rows


def _pope(source: Path, text: str, images: Path) -> list[dict]:
    """One JSON object per line: {"question_id", "image", "text", "label": "yes" | "no"}."""
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        q = parse_json(source, line, f":{n}")
        label = f"line {n}"
        answer = _field(source, q, "label", str, label)
        if normalize(answer) not in ("yes", "no"):
            raise DataError(f"{source}: {label}: 'label' must be yes or no, got {answer!r:.60}")
        rows.append({"id": _field(source, q, "question_id", (str, int), label),
                     "image": str(images / _image_name(source, q, "image", label)),
                     "question": _field(source, q, "text", str, label), "answer": answer, "label": answer})  # fmt: skip
    return rows


def _textvqa(source: Path, text: str, images: Path) -> list[dict]:
    """TextVQA_0.5.1_val.json: {"data": [{"question_id", "image_id", "question", "answers": [TEXT, ...]}]}."""
    data = parse_json(source, text)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{source}: a TextVQA file is a JSON object whose 'data' is a list of questions")
    rows = []
    for n, q in enumerate(data["data"]):
        label = f"data[{n}]"
        answers = _field(source, q, "answers", list, label)
        if not answers or not all(isinstance(a, str) for a in answers):
            raise DataError(f"{source}: {label}: 'answers' must be a non-empty list of strings")
        rows.append({"id": _field(source, q, "question_id", (str, int), label),
                     "image": str(images / _image_name(source, q, "image_id", label, ".jpg")),
                     "question": _field(source, q, "question", str, label), "answer": answers})  # fmt: skip
    return rows


_CONVERTERS = {"gqa": _gqa, "pope": _pope, "textvqa": _textvqa}
