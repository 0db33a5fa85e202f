"""Builds killed at several points (SIGKILL: no cleanup code runs) leave nothing that loads; the LLM builder dies with
them; the next build removes what they left; a swap interrupted between its renames says where the bundle is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adafv.runtime import BundleError
from adafv.runtime import manifest as bundle_format

ADAFV = str(Path(sys.executable).with_name("adafv"))


def _partials(out: Path) -> list[Path]:
    return [p for p, _ in bundle_format.hidden_siblings(out)]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def _wait_for(condition, timeout: float = 120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find orphaned builder processes (Linux)")
@pytest.mark.parametrize("when", ["while loading and exporting", "while the LLM builder runs", "after the LLM"])
def test_a_killed_build_leaves_nothing(tmp_path, when):
    out = tmp_path / "engines" / "b"
    proc = subprocess.Popen(
        [ADAFV, "engine", "tiny-llava", "--keep", "8", "--target", "cpu", "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = out.parent / f".b.partial-{proc.pid}"
    if when == "while loading and exporting":
        assert _wait_for(lambda: (partial / "vision.onnx").exists() or proc.poll() is not None)
    elif when == "while the LLM builder runs":
        assert _wait_for(lambda: bool(_processes_mentioning(str(partial / ".scratch"))) or proc.poll() is not None)
    else:
        assert _wait_for(lambda: (partial / "llm" / "model.onnx").exists() or proc.poll() is not None)
    assert proc.poll() is None, "the build finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with pytest.raises(BundleError, match="not found"):
        bundle_format.read_manifest(out)  # nothing that loads
    assert _wait_for(lambda: not _processes_mentioning(str(partial)), timeout=1), "the LLM builder outlived us"
    assert _partials(out)  # the dead build's partial folder is still there ...
    subprocess.run([ADAFV, "engine", "tiny-llava", "--keep", "8", "--target", "cpu", "--out", str(out), "--quiet"],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    assert _partials(out) == []  # ... until the next build removes it
    bundle_format.read_manifest(out)


def test_an_interrupted_swap_says_where_the_bundle_is(tmp_path, make_bundle):
    """A build that died between the two renames of the fallback swap: no target, the new bundle hidden. Loading
    names it; the next build removes it (its process is gone)."""
    import shutil

    from adafv import AdaFVConfig
    from adafv.export.bundle import EngineConfig, build

    out = tmp_path / "b"
    dead = 2**22 + 12345  # above the default pid_max: no such process
    shutil.copytree(make_bundle("tiny-llava", 32, llm="fp32").path, tmp_path / f".b.partial-{dead}")
    with pytest.raises(BundleError, match=f"interrupted while replacing it.*partial-{dead}: rename it to b"):
        bundle_format.read_manifest(out)
    build(EngineConfig("tiny-llava", AdaFVConfig(keep=8), target="cpu"), out=out, progress=False)
    assert _partials(out) == [] and (out / "manifest.json").is_file()


def test_the_swap_is_one_atomic_exchange(tmp_path):
    """renameat2(RENAME_EXCHANGE): the target is the old bundle or the new one at every instant, never missing."""
    from adafv.export.atomic import exchange, swap_into_place

    a, b = tmp_path / "a", tmp_path / "b"
    for path in (a, b):
        path.mkdir()
        (path / "which").write_text(path.name)
    if not exchange(a, b):
        pytest.skip("this system or filesystem has no renameat2(RENAME_EXCHANGE): the two-rename fallback runs")
    assert (a / "which").read_text() == "b" and (b / "which").read_text() == "a"
    swap_into_place(a, b)  # the partial `a` (now holding "b") replaces the target `b`; the old one is removed
    assert (b / "which").read_text() == "b" and sorted(os.listdir(tmp_path)) == ["b"]
