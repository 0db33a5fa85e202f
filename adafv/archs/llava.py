"""LLaVA-1.5 (`llava`: one 336-px crop) and LLaVA-NeXT (`llava_next`: anyres, a base view and up to 4 crops): a
CLIP-style tower with a [CLS] token, whose attention row at the feature layer is the saliency cue; LLaVA's MLP
projector; a Llama/Mistral/Vicuna LLM with 1-D positions; LLaVA-NeXT's `image_newline` after each grid row."""

from __future__ import annotations

from typing import Any

from ..errors import ModelError
from .base import Arch, register


class Llava(Arch):
    name = "llava"
    anyres = False
    processor_kind = "clip"

    def model_class(self):
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration

    def _config_class(self):
        from transformers import LlavaConfig

        return LlavaConfig

    def _processors(self, size: int, pinpoints):
        from transformers import CLIPImageProcessorPil, LlavaProcessor

        return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}), \
            LlavaProcessor  # fmt: skip

    def check(self, config, where: str) -> None:
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise ModelError(f"{where}: vision_feature_layer={layer!r}; adafv supports a single feature layer")
        if config.vision_feature_select_strategy != "default":
            raise ModelError(f"{where}: vision_feature_select_strategy must be 'default' (a [CLS] token to drop)")
        if config.vision_config.model_type != "clip_vision_model":
            raise ModelError(
                f"{where}: vision tower {config.vision_config.model_type!r}; adafv needs a CLIP-style tower with [CLS]"
            )

    def config(self, vision, text, tokenizer, *, pinpoints: list[list[int]] | None = None):
        from transformers import CLIPVisionConfig, LlamaConfig

        vision_config = vision if not isinstance(vision, dict) else CLIPVisionConfig(**vision)
        text_config = text if not isinstance(text, dict) else LlamaConfig(**text)
        extra = {"image_grid_pinpoints": pinpoints} if self.anyres else {}
        return self._config_class()(
            vision_config=vision_config,
            text_config=text_config,
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            **extra,
        )

    def build(self, vision, text, tokenizer, *, seed: int = 0, chat_template: str | None = None,
              pinpoints: list[list[int]] | None = None) -> tuple[Any, Any]:  # fmt: skip
        import torch

        config = self.config(vision, text, tokenizer, pinpoints=pinpoints)
        vision_config = config.vision_config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.model_class()(config)
        image_processor, processor_class = self._processors(vision_config.image_size, pinpoints)
        processor = processor_class(image_processor=image_processor, tokenizer=tokenizer,
                                    patch_size=vision_config.patch_size, vision_feature_select_strategy="default",
                                    num_additional_image_tokens=1, chat_template=chat_template)  # fmt: skip
        return model.eval(), processor

    def crop_range(self, config) -> tuple[int, int]:
        return 1, 1

    def grid(self, config, image_size_hw: tuple[int, int]) -> tuple[int, int]:
        return 1, 1

    def patches_per_side(self, config) -> int:
        return config.vision_config.image_size // config.vision_config.patch_size

    def visual(self, model):
        from ..vision import VisualTokens

        return VisualTokens(model.model.vision_tower, model.model.multi_modal_projector,
                            model.config.vision_feature_layer)  # fmt: skip

    def newline(self, model):
        return None

    def stock_image_features(self, model, inputs: dict):
        import torch

        kwargs = {"image_sizes": inputs["image_sizes"]} if "image_sizes" in inputs else {}
        out = model.model.get_image_features(pixel_values=inputs["pixel_values"], **kwargs)
        return torch.cat(list(out.pooler_output), dim=0)

    def language_model(self, model):
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):  # an empty shell: its own (meta) weights are replaced below
            lm = AutoModelForCausalLM.from_config(model.config.text_config)
        lm.model = model.model.language_model
        lm.lm_head = model.lm_head
        lm.generation_config = model.generation_config
        return lm.eval()

    def fallback_prompt(self, prompt: str) -> str:
        return f"USER: <image>\n{prompt} ASSISTANT:"


class LlavaNext(Llava):
    name = "llava_next"
    anyres = True
    processor_kind = "anyres"

    def model_class(self):
        from transformers import LlavaNextForConditionalGeneration

        return LlavaNextForConditionalGeneration

    def _config_class(self):
        from transformers import LlavaNextConfig

        return LlavaNextConfig

    def _processors(self, size: int, pinpoints):
        from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

        return LlavaNextImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                          image_grid_pinpoints=pinpoints), LlavaNextProcessor  # fmt: skip

    def crop_range(self, config) -> tuple[int, int]:
        side = config.vision_config.image_size
        crops = [(h // side) * (w // side) for h, w in config.image_grid_pinpoints]
        return min(crops) + 1, max(crops) + 1

    def grid(self, config, image_size_hw: tuple[int, int]) -> tuple[int, int]:
        from transformers.image_processing_utils import select_best_resolution

        h, w = select_best_resolution(list(image_size_hw), config.image_grid_pinpoints)
        side = config.vision_config.image_size
        return h // side, w // side

    def newline(self, model):
        return model.model.image_newline  # (D,)


LLAVA = register(Llava())
LLAVA_NEXT = register(LlavaNext())
