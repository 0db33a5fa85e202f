"""Files a command writes (`adafv show --out`, `adafv convert --out`): the rule `adafv engine --out` follows for
folders, for single files.

- Never the input: an output that is (or links to) one of the command's input files is refused, `--force` or not.
- Never a file the command did not write, unless `--force`: a file this command wrote before carries its mark
  (`adafv show`'s PNG and JPEG sheets say so in their metadata) and is replaced; any other existing file is refused.
- Never half-written: the file is written beside its target under a hidden name and renamed over it in one step, so
  an interrupted command leaves the old file or the new one, never a torn one.

Each refusal is one `OutputError` line naming the path and what to do instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from adafv.errors import OutputError


def check_output(
    out: Path,
    *,
    command: str,
    inputs: Iterable[Path | str] = (),
    suffixes: tuple[str, ...] = (),
    ours: Callable[[Path], bool] | None = None,
    force: bool = False,
) -> Path:
    """Check `out` before any work; returns it. `suffixes`: the accepted extensions (lower case, with the dot);
    `ours(path)`: whether an existing file was written by this command (then it is replaced without `--force`)."""
    out = Path(out)
    if out.is_dir():
        raise OutputError(f"--out {out} is a folder: name a file in it (e.g. {out / ('out' + (suffixes or ('',))[0])})")
    if suffixes and out.suffix.lower() not in suffixes:
        raise OutputError(f"--out {out}: {command} writes {' or '.join(suffixes)} files; name one with that extension")
    parent = out.parent if str(out.parent) else Path(".")
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise OutputError(f"--out {out}: {folder} is a file, not a folder")
            break
    for source in inputs:
        if source is not None and _same_file(out, Path(source)):
            raise OutputError(f"--out {out} is {command}'s own input {source}: name another file")
    if out.is_symlink() and not force:
        raise OutputError(f"--out {out} is a symbolic link: {command} does not write through links (--force replaces "
                          "the link itself)")  # fmt: skip
    if out.exists() and not force and not (ours is not None and _safely(ours, out)):
        raise OutputError(f"--out {out} exists and was not written by {command}: name a new file, or pass --force to "
                          "replace it")  # fmt: skip
    return out


def write_atomic(out: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` writes the whole file to a hidden name beside `out`; then one rename puts it in place."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial" + out.suffix, dir=parent)
    except OSError as e:
        raise OutputError(f"cannot write {out}: {e.strerror or e}") from e
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, out)
    except OSError as e:
        raise OutputError(f"cannot write {out}: {e.strerror or e}") from e
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError, ValueError):  # a loop of links, an over-long name: not the same file as ours
        return False


def _safely(ours: Callable[[Path], bool], path: Path) -> bool:
    try:
        return bool(ours(path))
    except Exception:  # unreadable or not what we write: not ours
        return False
