"""Every error adafv raises on purpose: one hierarchy under `AdafvError`, so a caller (the CLI among them) catches one
class. Every message names the offending input and what would be accepted instead. Torch-free: the runtime uses it.

    AdafvError
    ├── ConfigError       a setting out of range or inconsistent (keep, mode, method, options)
    ├── ScoreError        saliency / relevance of the wrong shape, dtype or values
    ├── ModelError        a model name or checkpoint that cannot be resolved or is not supported
    ├── InputError        an image or prompt the reference pipeline cannot use
    ├── DataError         a data file (eval's questions, calibration data, a benchmark's source) that cannot be used
    ├── OutputError       an output path that would lose a file, or cannot be written
    ├── BuildError        a bundle could not be built (export's LintError, ParityError, LLMExportError)
    ├── CalibrationError  a precision report that cannot be made or says too little
    └── RuntimeFailure    the torch-free runtime: ImageError, PromptError, BundleError, OptionError, EngineError
                          (and TensorRTUnavailable, OnnxRuntimeMissing)
"""


class AdafvError(Exception):
    """Base class of every error adafv raises on purpose."""


class ConfigError(AdafvError, ValueError):
    """A setting is out of range or inconsistent (keep, mode, method, ...)."""


class ScoreError(AdafvError, ValueError):
    """Saliency or relevance tensors have the wrong shape, dtype or values (NaN, inf, negative)."""


class ModelError(AdafvError, LookupError):
    """A model name or checkpoint cannot be resolved or is of an architecture adafv does not support."""


class InputError(AdafvError, ValueError):
    """An image or prompt handed to a pipeline cannot be used."""


class DataError(AdafvError, ValueError):
    """A data file line that cannot be used (missing field, wrong type, unreadable image path, duplicate id)."""


class OutputError(AdafvError, ValueError):
    """An output path that would lose a file, or that cannot be written."""


class BuildError(AdafvError):
    """A bundle could not be built (the message says which step and why)."""


class CalibrationError(AdafvError, ValueError):
    """A precision report that cannot be made or says too little (too few items the engine takes, a reference of
    another model)."""


class RuntimeFailure(AdafvError):
    """Base class of every error the torch-free runtime raises on purpose."""


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
