"""Questions files: the JSONL that `adafv eval` and INT8 calibration read (one object per line, an "image" path
relative to the file's folder), and the text and JSON readers `adafv convert` uses for benchmark files. One home for
reading them, so both commands refuse the same bad file with the same one line (DataError). Torch-free."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DataError


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file (a BOM allowed), or one DataError line saying why not."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path} not found")
    if not path.is_file():
        raise DataError(f"{what} {path} is not a file")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def parse_json(source: Path, text: str, where: str = "") -> Any:
    """json.loads, or one DataError line naming the file (and `where`, e.g. ":12" for a line)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise DataError(f"{source}{where}: JSON nested too deeply") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{source}{where}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def jsonl(path: Path, what: str, shape: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; `shape` names the expected object in the error, e.g.
    "{image, question, answer}"."""
    path = Path(path)
    for n, line in enumerate(read_text(path, what).splitlines(), start=1):
        if not line.strip():
            continue
        row = parse_json(path, line, f":{n}")
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: each line is an object {shape}, not a {type(row).__name__}")
        yield n, row


def local_path(source: Path, value: str) -> Path:
    """A path written in `source`: as is when absolute, else relative to the file's folder."""
    p = Path(value)
    return p if p.is_absolute() else Path(source).parent / p
