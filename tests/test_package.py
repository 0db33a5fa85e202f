"""Packaging promises: one `adafv` namespace, a light `import adafv`, a torch-free runtime, a working demo."""

import subprocess
import sys
from pathlib import Path


def fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_namespace():
    out = fresh(
        "import adafv.export, adafv.runtime, adafv.calib, adafv.cli, adafv.eval, adafv.assets, adafv.checkpoints; "
        "print('ok')"
    )
    assert out == "ok"


def test_import_adafv_is_light():
    out = fresh("import sys, adafv; print(sorted(m for m in ('torch', 'transformers', 'onnx') if m in sys.modules))")
    assert out == "[]"


def test_runtime_never_imports_torch_or_transformers():
    code = (
        "import sys, adafv.runtime, adafv.runtime.images, adafv.runtime.doctor, adafv.serve.app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))"
    )
    assert fresh(code) == "[]"


def test_demo_prints_an_answer():
    from pathlib import Path

    adafv = Path(sys.executable).with_name("adafv")
    proc = subprocess.run([str(adafv), "demo"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "answer:" in proc.stdout and "kept:" in proc.stdout


def test_the_method_package_holds_only_the_method():
    """adafv/ imports none of the other floors (export, runtime, calib, eval, cli): dependencies point downwards."""
    import ast
    from pathlib import Path

    import adafv

    floors = ("adafv.export", "adafv.runtime", "adafv.calib", "adafv.eval", "adafv.cli")
    root = Path(adafv.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith(floors)]
    assert offenders == []
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == ["archs"]  # the method's one subpackage: one module per architecture family


def test_data_ships_in_the_package():
    from adafv.assets import path
    from adafv.models import resolve

    assert path("rocket.jpg").is_file() and path("toyworld.png").is_file()
    for name in ("toyworld-llava-next", "toyworld-v2-llava-next", "toyworld-v2-qwen2.5-vl"):
        assert (Path(resolve(name).source) / "model.safetensors").is_file(), name


def test_version_has_one_source():
    from importlib import metadata

    import adafv

    assert metadata.version("adafv") == adafv.__version__
    version = subprocess.run(
        [str(Path(sys.executable).with_name("adafv")), "--version"], capture_output=True, text=True
    )
    assert version.stdout.strip() == f"adafv {adafv.__version__}"
