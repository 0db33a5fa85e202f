"""TensorRT facts of this machine (version, GPU compute capability) and the native engine runner.

The runner deserializes the bundle's `vision.<trt>-sm<cc>.plan` through Polygraphy's TrtRunner (which manages CUDA
buffers). NOT EXERCISED BY CI: TensorRT cannot be installed on our machines; these paths import lazily and the tests
that need them skip with that reason.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

from .contract import DTYPES, ORDER, TOKENS
from .errors import RuntimeFailure


class TensorRTUnavailable(RuntimeFailure):
    """tensorrt does not import here, or there is no GPU."""


def tensorrt_version() -> str:
    """The installed TensorRT version; raises TensorRTUnavailable with the reason otherwise."""
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or OSError for a missing libnvinfer / libnvonnxparser
        raise TensorRTUnavailable(f"tensorrt does not import: {e}") from e
    return trt.__version__


def compute_capability() -> str:
    """The GPU's compute capability as 'XY' (e.g. '87' for Jetson Orin), from the CUDA runtime or nvidia-smi."""
    for lib in ("libcudart.so", "libcudart.so.13", "libcudart.so.12"):
        try:
            cudart = ctypes.CDLL(lib)
        except OSError:
            continue
        major, minor = ctypes.c_int(), ctypes.c_int()
        ok = cudart.cudaDeviceGetAttribute(ctypes.byref(major), 75, 0) == 0  # cudaDevAttrComputeCapabilityMajor
        ok = ok and cudart.cudaDeviceGetAttribute(ctypes.byref(minor), 76, 0) == 0  # ...Minor
        if ok:
            return f"{major.value}{minor.value}"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0].replace(".", "")
    raise TensorRTUnavailable("no CUDA GPU found (neither libcudart nor nvidia-smi answered)")


def engine_name(trt_version: str, sm: str) -> str:
    return f"vision.{trt_version}-sm{sm}.plan"


class PlanRunner:
    """Runs a serialized TensorRT engine: feeds name -> numpy, returns kept_tokens, kept_order."""

    def __init__(self, path):
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self._runner = TrtRunner(EngineFromBytes(BytesFromPath(str(path))))
        self._runner.activate()
        self.dtypes = dict(DTYPES)

    def run(self, feeds: dict):
        import numpy as np

        out = self._runner.infer(feeds)
        return np.asarray(out[TOKENS]), np.asarray(out[ORDER])
