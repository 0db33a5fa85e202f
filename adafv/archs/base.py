"""What an architecture family must say (see adafv.archs). Torch and transformers are imported on use only."""

from __future__ import annotations

from typing import Any

from ..errors import ModelError


class Arch:
    """One VLM family. Subclasses fill in every method; `name` is the HF `model_type`."""

    name: str = ""
    anyres: bool = False  # several crops per image (a base view + a grid of high-resolution crops)
    positions: str = "1d"  # how the LLM numbers its tokens: "1d" (RoPE over the sequence) or "mrope" (3-D)
    processor_kind: str = ""  # the image processor the torch-free runtime reproduces (runtime.preprocess kinds)

    # -- the checkpoint ---------------------------------------------------------------------------------------------

    def model_class(self):
        """The transformers class of a full VLM of this family."""
        raise NotImplementedError

    def load_processor(self, source: str, **kwargs):
        """The checkpoint's own HF processor (the PIL backend: the torch-free runtime reproduces it bit for bit)."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(source, backend="pil", **kwargs)

    def check(self, config, where: str) -> None:
        """A ModelError naming what adafv does not support in this checkpoint's config."""
        raise NotImplementedError

    def config(self, vision, text, tokenizer, *, pinpoints: list[list[int]] | None = None):
        """The family's HF config from a vision and a text config (objects or dicts), without weights."""
        raise NotImplementedError

    def build(self, vision, text, tokenizer, *, seed: int = 0, chat_template: str | None = None,
              pinpoints: list[list[int]] | None = None) -> tuple[Any, Any]:  # fmt: skip
        """A freshly initialised (model, processor) from configs (random weights, seeded): the tiny twins, the
        bench's real shapes, the toy-world model."""
        raise NotImplementedError

    # -- images -----------------------------------------------------------------------------------------------------

    def crop_range(self, config) -> tuple[int, int]:
        """(min, max) crops the processor emits for one image."""
        raise NotImplementedError

    def grid(self, config, image_size_hw: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of the high-resolution crop grid of an image of (height, width); (1, 1) without one."""
        raise NotImplementedError

    def patches_per_side(self, config) -> int:
        raise NotImplementedError

    # -- the model's modules ----------------------------------------------------------------------------------------

    def tower_facts(self, vision) -> dict[str, int]:
        """The vision tower's shape from its config (for `adafv plan`): width, heads, MLP width and layers of the
        checkpoint (the graph may stop at a feature layer)."""
        return {"width": vision.hidden_size, "heads": vision.num_attention_heads, "mlp": vision.intermediate_size,
                "layers": vision.num_hidden_layers}  # fmt: skip

    def visual(self, model):
        """adafv.vision.VisualTokens over the model's own tower and projector (shared, not copied)."""
        raise NotImplementedError

    def graph_visual(self, model, resolution: tuple[int, int] | None = None):
        """The visual module the vision graph runs (float pixels (N, 3, H, W) in): `visual` for fixed-size crops;
        a dynamic-resolution family binds the bundle's resolution here."""
        return self.visual(model)

    def newline(self, model):
        """The embedding the rows layout puts after each kept grid row, (D,), or None."""
        raise NotImplementedError

    def stock_image_features(self, model, inputs: dict):
        """transformers' own image features for the processor's `inputs` (all tokens): (n_image_tokens, D)."""
        raise NotImplementedError

    def language_model(self, model):
        """A standalone causal LM sharing the VLM's language model and head (what the decoder builder exports)."""
        raise NotImplementedError

    def fallback_prompt(self, prompt: str) -> str:
        """The chat-formatted text with the image placeholder, for a processor without a chat template."""
        raise NotImplementedError


REGISTRY: dict[str, Arch] = {}


def register(arch: Arch) -> Arch:
    REGISTRY[arch.name] = arch
    return arch


def get(model_type: str, where: str = "") -> Arch:
    """The family of a HF `model_type`, or one ModelError line naming the families adafv knows."""
    if model_type not in REGISTRY:
        prefix = f"{where}: " if where else ""
        raise ModelError(f"{prefix}model_type {model_type!r} is not supported (supported: {', '.join(REGISTRY)})")
    return REGISTRY[model_type]
