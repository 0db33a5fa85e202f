"""Which ONNX Runtime this environment has, which execution providers really work here, and how a bundle's target
maps onto them.

`onnxruntime` and `onnxruntime-gpu` install the same `onnxruntime` module; the GPU build lists the CUDA and TensorRT
providers even on a machine without a GPU (or without the CUDA libraries) and silently falls back to the CPU when
asked for them. So "available" is not "works": `working_providers()` creates a one-node session on each GPU provider
and keeps it only if the session really runs on it. Before that, on the GPU build, `preload_cuda()` calls ONNX
Runtime's own `onnxruntime.preload_dlls()`, which loads CUDA and cuDNN from the pip `nvidia-*` wheels (or the system
paths) so that the runtime needs no `import torch` to find them.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
from importlib import metadata

from .errors import RuntimeFailure

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
TARGETS = ("cpu", "cuda")
TARGET_PROVIDERS = {  # what a bundle's target is built for (its decoder: onnxruntime-genai `-e cpu` / `-e cuda`)
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "TensorrtExecutionProvider"],
}
ORT_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-qnn")
GENAI_PACKAGES = ("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime-genai-directml")
# y = x + x on one float: the smallest graph that tells whether a provider really runs (opset 13, IR 8)
_PROBE = base64.b64decode(
    "CAgSBWFkYWZ2OjkKDgoBeAoBeBIBeSIDQWRkEgVwcm9iZVoPCgF4EgoKCAgBEgQKAggBYg8KAXkSCgoICAESBAoCCAFCBAoAEA0="
)


class OnnxRuntimeMissing(RuntimeFailure):
    """No ONNX Runtime package is installed (or it does not import)."""


def installed(packages) -> dict[str, str]:
    """{distribution: version} of those of `packages` that are installed."""
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def ort():
    """The onnxruntime module, or a one-line error saying what to install (or what to uninstall: the CPU and GPU
    packages write the same folder, and whichever was installed last has broken the other)."""
    packages = installed(ORT_PACKAGES)
    if len(packages) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in packages.items())
        raise OnnxRuntimeMissing(
            f"more than one ONNX Runtime package is installed ({listed}): they overwrite each other's files; "
            f"pip uninstall {' '.join(packages)}, then install exactly one (adafv[cpu] or adafv[gpu])"
        )
    try:
        import onnxruntime
    except ImportError as e:
        raise OnnxRuntimeMissing(
            f"ONNX Runtime does not import ({e}): install adafv[cpu] (onnxruntime) or adafv[gpu] (onnxruntime-gpu), "
            "exactly one of them"
        ) from e
    return onnxruntime


def is_gpu_build() -> bool:
    """Whether this ONNX Runtime was built with the CUDA provider (the onnxruntime-gpu package, or Jetson's build)."""
    return "CUDAExecutionProvider" in ort().get_available_providers()


def default_target() -> str:
    """`auto` for builds: cuda where this environment's ONNX Runtime is the GPU build, else cpu."""
    return "cuda" if is_gpu_build() else "cpu"


class _Captured:
    text = ""


@contextlib.contextmanager
def _captured():
    """Everything written to stdout/stderr inside, by Python or by ONNX Runtime's C++ logger, kept instead of shown:
    a provider that fails to load prints several lines of the expected answer; `adafv doctor` reports them."""
    import os
    import sys
    import tempfile

    result = _Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(1), os.dup(2)
        python = io.StringIO()
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            with contextlib.redirect_stdout(python), contextlib.redirect_stderr(python):
                yield result
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            tmp.seek(0)
            result.text = (python.getvalue() + tmp.read().decode(errors="replace")).strip()


@functools.cache
def preload_cuda() -> str:
    """Load CUDA/cuDNN for the GPU build without torch (ONNX Runtime >= 1.21's preload_dlls); returns what it said.
    Quiet: its messages are kept for `adafv doctor` rather than printed into a user's output."""
    module = ort()
    if not hasattr(module, "preload_dlls") or not is_gpu_build():
        return ""
    with _captured() as out:
        try:
            module.preload_dlls()
        except Exception as e:  # a missing directory or library: the probe below decides
            print(f"preload_dlls failed: {e}")
    return out.text


PROBE_LOG: dict[str, str] = {}  # provider -> what ONNX Runtime said when it did not work


@functools.cache
def probe(provider: str) -> bool:
    """Whether a session asked for `provider` really runs on it (a GPU answers, its libraries load)."""
    module = ort()
    if provider not in module.get_available_providers():
        return False
    if provider == "CPUExecutionProvider":
        return True
    preload_cuda()
    options = module.SessionOptions()
    options.log_severity_level = 4
    module.set_default_logger_severity(3)  # errors only, captured: the provider library's load error is the answer
    try:
        with _captured() as out:
            try:
                session = module.InferenceSession(_PROBE, options, providers=[provider, "CPUExecutionProvider"])
                works = session.get_providers()[0] == provider
            except Exception as e:
                print(e)
                works = False
    finally:
        module.set_default_logger_severity(2)  # ONNX Runtime's default: warnings
    if not works:
        PROBE_LOG[provider] = _reason(out.text)
    return works


def _reason(text: str) -> str:
    """The most telling part of what ONNX Runtime printed when a provider failed (a library it could not load)."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in text.splitlines()]
    for line in lines:
        if "cannot open shared object file" in line:
            return line.rsplit("with error: ", 1)[-1]
    for key in ("Require", "Please install"):
        for line in lines:
            if key in line:
                return line[line.find(key) :]
    return next((line for line in lines if line), "it fell back to the CPU provider")


def working_providers() -> list[str]:
    """TensorRT, then CUDA, then CPU: those that really run here."""
    return [p for p in ORDER if probe(p)] or ["CPUExecutionProvider"]


def best_providers(available: list[str] | None = None) -> list[str]:
    """TensorRT, then CUDA, then CPU: those of `available` (default: those that really work here)."""
    if available is None:
        return working_providers()
    return [p for p in ORDER if p in available] or ["CPUExecutionProvider"]


def target_mismatch(target: str, provider: str) -> str | None:
    """A one-line warning when a bundle built for `target` runs its decoder on `provider`; None when it fits."""
    if provider in TARGET_PROVIDERS.get(target, []):
        return None
    if target == "cuda":
        return (
            f"this bundle was built for cuda (fp16 decoder) but runs on {provider}: it works, slowly; "
            "for a CPU, build with --target cpu"
        )
    return (
        f"this bundle was built for {target} but runs on {provider}: it works, but ONNX Runtime copies between host "
        "and device at every layer; build with --target cuda for a GPU"
    )
