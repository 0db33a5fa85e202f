"""README commands are real: every `adafv ...` and `make engine ...` line of the README's bash blocks runs and exits
0, in the README's order (later commands use the bundles earlier ones build, as a reader's would), in a scratch
folder holding the README's sample images, so nothing is written into the checkout."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("  #")[0].strip() for b in blocks for line in b.splitlines()]
    return [line for line in lines if line.startswith(("adafv ", "make engine"))]


def test_readme_has_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text


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
