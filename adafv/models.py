"""Model registry: named specs, per-architecture knowledge, and loading a checkpoint with its own HF processor.

A spec knows where the weights come from; an architecture (`llava`, `llava_next`) knows its crops, patch grid,
pinpoints and reading order. A local checkpoint directory works wherever a name does.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from .errors import ModelError

PACKAGED = "package:"  # a source shipped inside the wheel: `package:<name>` under adafv.checkpoints
PROMPT_SENTINEL = "\u241fadafv-prompt\u241f"  # stands for the user's question while the chat template is rendered


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A named model. `source` is a llava-hf id, a local directory, or `tiny:<name>` for the built-in twins."""

    name: str
    source: str
    arch: str
    description: str

    @property
    def is_tiny(self) -> bool:
        return self.source.startswith("tiny:")


REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec("llava-1.5", "llava-hf/llava-1.5-7b-hf", "llava", "LLaVA-1.5 7B (576 tokens, 1 crop)"),
        ModelSpec(
            "llava-next", "llava-hf/llava-v1.6-mistral-7b-hf", "llava_next", "LLaVA-NeXT Mistral 7B (up to 2,880)"
        ),
        ModelSpec(
            "llava-next-vicuna", "llava-hf/llava-v1.6-vicuna-7b-hf", "llava_next", "LLaVA-NeXT Vicuna 7B (up to 2,880)"
        ),
        ModelSpec("tiny-llava", "tiny:tiny-llava", "llava", "offline random-weight LLaVA-1.5 twin (64 tokens)"),
        ModelSpec(
            "tiny-llava-next", "tiny:tiny-llava-next", "llava_next", "offline random-weight LLaVA-NeXT twin (<= 320)"
        ),
        ModelSpec(
            "toyworld-llava-next",
            PACKAGED + "toyworld-llava-next",
            "llava_next",
            "LLaVA-NeXT trained here on toy-world scenes (offline default)",
        ),
    ]
}


def known_models() -> str:
    return ", ".join(REGISTRY)


def packaged(name: str) -> Path:
    """The folder of a checkpoint shipped in the package (adafv.checkpoints, through importlib.resources)."""
    from adafv.checkpoints import path

    return path(name)


def resolve(name_or_path: str | os.PathLike) -> ModelSpec:
    """A registered name, a local checkpoint directory, or a llava-hf id already in the HF cache. A checkpoint
    shipped in the package resolves to its installed folder."""
    key = str(name_or_path)
    if key in REGISTRY:
        spec = REGISTRY[key]
        if spec.source.startswith(PACKAGED):
            folder = packaged(spec.source[len(PACKAGED) :])
            if not (folder / "config.json").is_file():
                raise ModelError(f"{spec.name}: the shipped checkpoint is missing at {folder}")
            return dataclasses.replace(spec, source=str(folder))
        return spec
    path = Path(key).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise ModelError(f"{path} is a directory without config.json: not a checkpoint")
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (ValueError, AttributeError, OSError) as e:
            raise ModelError(f"{config} is not a readable model config (corrupt JSON?): {_first_line(e)}") from e
        if model_type not in ARCHES:
            raise ModelError(f"{path}: model_type {model_type!r} is not supported (supported: {', '.join(ARCHES)})")
        return ModelSpec(path.name, str(path), model_type, f"local checkpoint {path}")
    if "/" in key and not path.exists():
        return ModelSpec(key, key, "", f"Hugging Face id {key}")  # architecture read from its config on load
    raise ModelError(
        f"unknown model {key!r}: not a registered name nor a checkpoint directory. Known: {known_models()}"
    )


def fingerprint(spec: ModelSpec) -> str:
    """What the weights are, without reading them: the tiny twin's recipe, or the checkpoint folder with its files'
    names, sizes and mtimes (a build key, an eval run's identity)."""
    source = Path(spec.source)
    if spec.is_tiny or not source.is_dir():
        return spec.source
    files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in source.iterdir() if p.is_file())
    return json.dumps([str(source), files])


@dataclasses.dataclass(frozen=True)
class Arch:
    """What adafv needs to know about a VLM architecture."""

    name: str
    anyres: bool

    def crop_range(self, config) -> tuple[int, int]:
        """(min, max) number of crops the processor emits for one image."""
        if not self.anyres:
            return 1, 1
        side = config.vision_config.image_size
        tiles = [(h // side) * (w // side) for h, w in config.image_grid_pinpoints]
        return min(tiles) + 1, max(tiles) + 1

    def grid(self, config, image_size_hw) -> tuple[int, int]:
        """(rows, cols) of the high-resolution crop grid chosen for an image of (height, width); (1, 1) without."""
        if not self.anyres:
            return 1, 1
        from transformers.image_processing_utils import select_best_resolution

        h, w = select_best_resolution(list(image_size_hw), config.image_grid_pinpoints)
        side = config.vision_config.image_size
        return h // side, w // side


ARCHES = {"llava": Arch("llava", anyres=False), "llava_next": Arch("llava_next", anyres=True)}


@dataclasses.dataclass
class LoadedModel:
    """A VLM with its processor: what every reference path and exporter starts from."""

    spec: ModelSpec
    arch: Arch
    model: Any  # LlavaForConditionalGeneration | LlavaNextForConditionalGeneration
    processor: Any

    @property
    def config(self):
        return self.model.config

    @property
    def patches_per_crop(self) -> int:
        v = self.config.vision_config
        return (v.image_size // v.patch_size) ** 2

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    def render_prompt(self, prompt: str) -> str:
        """The chat-formatted text for one image and one question, with the image placeholder in it."""
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        return f"USER: <image>\n{prompt} ASSISTANT:"

    def prompt_template(self) -> tuple[str, str]:
        """The chat template around the question: (text before it, text after it); the image token is in `before`."""
        rendered = self.render_prompt(PROMPT_SENTINEL)
        if rendered.count(PROMPT_SENTINEL) != 1:
            raise ModelError(f"{self.spec.name}: the chat template does not place the prompt exactly once")
        before, after = rendered.split(PROMPT_SENTINEL)
        return before, after


def _check_supported(config, where: str) -> None:
    layer = config.vision_feature_layer
    if not isinstance(layer, int):
        raise ModelError(f"{where}: vision_feature_layer={layer!r}; adafv supports a single feature layer")
    if config.vision_feature_select_strategy != "default":
        raise ModelError(f"{where}: vision_feature_select_strategy must be 'default' (a [CLS] token to drop)")
    if config.vision_config.model_type != "clip_vision_model":
        raise ModelError(
            f"{where}: vision tower {config.vision_config.model_type!r}; adafv needs a CLIP-style tower with [CLS]"
        )


def load(name_or_path: str | os.PathLike, dtype: str | None = None) -> LoadedModel:
    """Load model + processor. Tiny twins are built in memory; other sources load from disk or the HF cache."""
    spec = resolve(name_or_path)
    if spec.is_tiny:
        from . import tiny

        model, processor = tiny.build(spec.source.split(":", 1)[1])
    else:
        model, processor = _load_pretrained(spec, dtype)
        spec = dataclasses.replace(spec, arch=model.config.model_type)
    if spec.arch not in ARCHES:
        raise ModelError(f"{spec.name}: architecture {spec.arch!r} is not supported ({', '.join(ARCHES)})")
    _check_supported(model.config, spec.name)
    model.eval()
    return LoadedModel(spec, ARCHES[spec.arch], model, processor)


def peek(name_or_path: str | os.PathLike) -> tuple[Arch, Any]:
    """(architecture, HF config) without loading any weights: for checks that must come before any work."""
    spec = resolve(name_or_path)
    if spec.is_tiny:
        from . import tiny

        config = tiny.config(spec.source.split(":", 1)[1])
    else:
        config = _pretrained_config(spec)
    if config.model_type not in ARCHES:
        raise ModelError(f"{spec.name}: model_type {config.model_type!r} is not supported ({', '.join(ARCHES)})")
    _check_supported(config, spec.name)
    return ARCHES[config.model_type], config


def _pretrained_config(spec: ModelSpec):
    from transformers import AutoConfig

    local = Path(spec.source).is_dir()
    try:
        return AutoConfig.from_pretrained(spec.source, **({} if local else {"local_files_only": True}))
    except OSError as e:
        if local:
            raise ModelError(f"cannot read the config of {spec.source}: {_first_line(e)}") from e
        raise ModelError(
            f"cannot load {spec.source!r}: not a local directory and not in the Hugging Face cache "
            f"(adafv never downloads weights; download it with `hf download {spec.source}` where you have network)"
        ) from e


def _load_pretrained(spec: ModelSpec, dtype: str | None):
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    local = Path(spec.source).is_dir()
    kwargs: dict[str, Any] = {} if local else {"local_files_only": True}
    config = _pretrained_config(spec)
    classes = {"llava": LlavaForConditionalGeneration, "llava_next": LlavaNextForConditionalGeneration}
    if config.model_type not in classes:
        raise ModelError(f"{spec.source}: model_type {config.model_type!r} is not supported ({', '.join(classes)})")
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype or "")
    try:
        model = classes[config.model_type].from_pretrained(spec.source, dtype=torch_dtype or "auto", **kwargs)
        # the PIL backend: the torch-free runtime reproduces it bit for bit (torchvision's resize differs slightly)
        processor = AutoProcessor.from_pretrained(spec.source, backend="pil", **kwargs)
    except (OSError, ValueError) as e:  # no weights, truncated safetensors, a processor that does not load
        raise ModelError(f"cannot load {spec.source}: {_first_line(e)}") from e
    return model, processor


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
