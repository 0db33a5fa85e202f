"""README commands are real: every `adafv ...` line in the README's bash blocks runs and exits 0."""

import os
import re
import shlex
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


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(command):
    argv = shlex.split(command)
    if argv[0] == "adafv":
        argv[0] = str(Path(sys.executable).with_name("adafv"))
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"
