"""The documented commands are real: every `adafv ...` and `make engine ...` line of the bash blocks of the README
and the docs pages runs and exits 0, in reading order (README, then the pages as the README links them: later
commands use the bundles earlier ones build, as a reader's would), in a scratch folder holding the sample images,
so nothing is written into the checkout. Every docs page the README links exists, and the README stays short."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


PAGES = ["README.md", "docs/models.md", "docs/build.md", "docs/precision.md", "docs/runtime.md", "docs/eval.md",
         "docs/results/toyworld.md", "docs/serving.md", "docs/results/bench.md", "docs/install.md",
         "docs/gpu-jetson.md", "docs/design.md", "docs/method.md", "docs/bundle.md", "docs/qwen.md",
         "docs/ros.md"]  # fmt: skip


def readme_commands() -> list[str]:
    text = "\n".join((ROOT / page).read_text() for page in PAGES)
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("  #")[0].strip() for b in blocks for line in b.splitlines()]
    return [line for line in lines if line.startswith(("adafv ", "make engine"))]


def test_readme_has_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text


def test_readme_is_short_and_its_links_hold():
    """At most ~150 lines; every relative link of the README and the docs pages names a file that exists, and
    every docs page is reachable from the README or a page it links."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for page in PAGES:
        path = ROOT / page
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).exists(), f"{page} links {target}, which does not exist"
    linked = {page for page in PAGES if page == "README.md" or any(
        Path(page).name in (ROOT / other).read_text() for other in PAGES if other != page)}  # fmt: skip
    assert linked == set(PAGES)
    docs = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md") if "bench" not in p.parts}  # outputs
    assert docs <= set(PAGES), docs - set(PAGES)


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path):
    commands = readme_commands()
    assert any(c.startswith("make engine") for c in commands) and any(c.startswith("adafv run") for c in commands)
    shutil.copytree(ROOT / "assets", tmp_path / "assets")
    venv = Path(sys.executable).parents[1]
    # this environment's adafv, and the checkout's Makefile without its setup step (-o: the stamp counts as done)
    make = ["make", "-s", "-f", str(ROOT / "Makefile"), f"VENV={venv}", "-o", str(venv / ".adafv-setup")]
    engines = ROOT / "engines"
    before = set(engines.iterdir()) if engines.is_dir() else set()
    for command in commands:
        argv = shlex.split(command)
        argv = make + argv[1:] if argv[0] == "make" else [str(venv / "bin" / "adafv"), *argv[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=dict(os.environ))
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"
    assert (set(engines.iterdir()) if engines.is_dir() else set()) == before  # nothing written into the checkout
