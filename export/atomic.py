"""Writing a bundle so that no crash, kill or Ctrl-C leaves a target that is half old and half new, or none at all.

* A build writes into `.<name>.partial-<pid>` beside the target (the LLM builder's scratch files included).
* It then swaps that folder with the target in one step: Linux's `renameat2(RENAME_EXCHANGE)` exchanges the two
  names atomically, so the target is always a complete bundle, old or new; the old one, now under the partial name,
  is removed. Where the kernel or filesystem lacks it, two renames, with the old bundle parked at
  `.<name>.old-<pid>` between them; if the process dies right there, loading the target says where the complete
  bundle is and how to put it back (`adafv.runtime.manifest.read_manifest`).
* Partial and parked folders of builds whose process is gone are removed by the next build aimed at the same place.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

from adafv.runtime.manifest import hidden_siblings

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(out: Path) -> list[Path]:
    """Remove the partial and parked folders that builds of `out` left when their process died; returns them."""
    removed = []
    for path, pid in hidden_siblings(out):
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def swap_into_place(tmp: Path, out: Path) -> None:
    """Make the complete bundle at `tmp` the target `out`, replacing what is there (an older bundle or an empty
    folder, as `bundle.check_out` allowed)."""
    if not out.exists():
        tmp.rename(out)
        return
    if exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # `tmp` now holds the old bundle
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    out.rename(old)
    tmp.rename(out)  # a death between these two renames: read_manifest points at the parked and the new bundle
    shutil.rmtree(old, ignore_errors=True)
