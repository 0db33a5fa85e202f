"""adafv: AdaFV visual-token selection for fast VLMs on robots and edge GPUs.

The method lives here in plain PyTorch. `import adafv` is light: torch and transformers load on first use of an
attribute that needs them.
"""

from __future__ import annotations

import importlib

from .config import METHODS, MODES, AdaFVConfig
from .errors import AdafvError, ConfigError, InputError, ModelError, ScoreError

__version__ = "0.1.0"

_LAZY = {
    "select_tokens": "select",
    "select": "methods",
    "adafv_positions": "select",
    "text_relevance": "relevance",
    "cls_attention": "saliency",
    "VisualTokens": "vision",
    "SelectTokens": "vision",
    "reading_order": "vision",
    "Reference": "pipeline",
    "load_model": "models",
    "resolve_model": "models",
}
_RENAMED = {"load_model": "load", "resolve_model": "resolve"}

__all__ = [
    "METHODS",
    "MODES",
    "AdaFVConfig",
    "AdafvError",
    "ConfigError",
    "InputError",
    "ModelError",
    "ScoreError",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, _RENAMED.get(name, name))
    raise AttributeError(f"module 'adafv' has no attribute {name!r}")
