"""adafv.runtime: answers questions from a bundle (vision graph or TensorRT engine + int4 LLM). numpy, PIL,
tokenizers, onnxruntime(-genai); never torch or transformers. Running a TensorRT engine needs tensorrt and
Polygraphy, which the runtime extras do not install (docs/gpu-jetson.md). Heavy modules load on first use."""

from .errors import BundleError, ImageError, PromptError, RuntimeFailure
from .images import load_image, load_image_bytes
from .pipeline import Pipeline
from .preprocess import PreparedImage

__all__ = ["BundleError", "ImageError", "Pipeline", "PreparedImage", "PromptError", "RuntimeFailure", "load_image",
           "load_image_bytes"]  # fmt: skip
