"""Packaging promises: one `adafv` namespace, a light `import adafv`, a torch-free runtime, a working demo."""

import subprocess
import sys


def fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_namespace():
    out = fresh("import adafv.export, adafv.runtime, adafv.calib, adafv.cli; print('ok')")
    assert out == "ok"


def test_import_adafv_is_light():
    out = fresh("import sys, adafv; print(sorted(m for m in ('torch', 'transformers', 'onnx') if m in sys.modules))")
    assert out == "[]"


def test_runtime_never_imports_torch_or_transformers():
    code = (
        "import sys, adafv.runtime, adafv.runtime.images; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))"
    )
    assert fresh(code) == "[]"


def test_demo_prints_an_answer():
    from pathlib import Path

    adafv = Path(sys.executable).with_name("adafv")
    proc = subprocess.run([str(adafv), "demo"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "answer:" in proc.stdout and "kept:" in proc.stdout
