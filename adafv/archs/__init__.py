"""The architecture seam: everything adafv knows about one VLM family lives in one module here, behind `Arch`.

A family says how its checkpoint is recognised, checked, loaded and built from configs (the tiny twins, the bench's
random-weight shapes and the toy-world model all go through `Arch.build`); how an image becomes crops (the crop
range, the grid an image gets, the patch grid, which processor the torch-free runtime reproduces); where saliency
comes from and how the visual tokens are made (`visual`); how the LLM reads them (the newline token of the rows
layout, the stock image features, the chat template's fallback, the LLM's positions); and which causal LM the
decoder builder exports. The rest of adafv asks the arch and never looks at a class name.

Adding a family is one new module that defines an `Arch` and registers it, plus its tests.
"""

from __future__ import annotations

from . import (
    llava,  # noqa: E402,F401 - registers llava and llava_next
    qwen,  # noqa: E402,F401 - registers qwen2_5_vl and qwen2_vl
)
from .base import REGISTRY, Arch, get, register

__all__ = ["REGISTRY", "Arch", "get", "register"]
