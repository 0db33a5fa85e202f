"""adafv.runtime: answers questions from a bundle (vision engine + int4 LLM). numpy, PIL, tokenizers, onnxruntime
(and tensorrt where present); never torch or transformers. Heavy modules load on first use."""

from .errors import BundleError, ImageError, PromptError, RuntimeFailure
from .images import load_image, load_image_bytes
from .pipeline import Pipeline
from .preprocess import PreparedImage

__all__ = ["BundleError", "ImageError", "Pipeline", "PreparedImage", "PromptError", "RuntimeFailure", "load_image",
           "load_image_bytes"]  # fmt: skip
