"""Errors of the torch-free runtime. Each message names the file or input at fault and what would work."""


class RuntimeFailure(Exception):
    """Base class of every error the runtime raises on purpose."""


class ImageError(RuntimeFailure, ValueError):
    """An image file is missing, empty, corrupt, too large, or of a pixel format that cannot be converted."""


class PromptError(RuntimeFailure, ValueError):
    """A prompt is empty or too long for the bundle."""


class BundleError(RuntimeFailure, ValueError):
    """A bundle is missing files, corrupt, or built for another version, keep, TensorRT or GPU."""


class OptionError(RuntimeFailure, ValueError):
    """A generation option is out of range (temperature, top_p, seed, max_new_tokens)."""


class EngineError(RuntimeFailure):
    """ONNX Runtime (or TensorRT) failed while running a graph of the bundle (out of memory, a kernel error)."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (ONNX Runtime's can run to many lines)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__
