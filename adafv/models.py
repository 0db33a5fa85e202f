"""Model registry: named specs, per-architecture knowledge, and loading a checkpoint with its own HF processor.

A spec knows where the weights come from; its architecture family (adafv.archs: `llava`, `llava_next`,
`qwen2_5_vl`) knows
everything model-specific. A local checkpoint directory works wherever a name does.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from . import archs
from .errors import ModelError, first_line

PACKAGED = "package:"  # a source shipped inside the wheel: `package:<name>` under adafv.checkpoints
PROMPT_SENTINEL = "\u241fadafv-prompt\u241f"  # stands for the user's question while the chat template is rendered


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A named model. `source` is a Hugging Face id, a local directory, or `tiny:<name>` for the built-in twins."""

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
        ModelSpec("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl",
                  "Qwen2.5-VL 3B (dynamic resolution: ~400 tokens at VGA)"),
        ModelSpec("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl",
                  "Qwen2.5-VL 7B (dynamic resolution: ~400 tokens at VGA)"),
        ModelSpec("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl",
                  "Qwen2-VL 2B (dynamic resolution, full attention in every tower block)"),
        ModelSpec("cosmos-reason1-7b", "nvidia/Cosmos-Reason1-7B", "qwen2_5_vl",
                  "NVIDIA Cosmos-Reason1 7B (a Qwen2.5-VL-7B for physical reasoning)"),
        ModelSpec("tiny-llava", "tiny:tiny-llava", "llava", "offline random-weight LLaVA-1.5 twin (64 tokens)"),
        ModelSpec(
            "tiny-llava-next", "tiny:tiny-llava-next", "llava_next", "offline random-weight LLaVA-NeXT twin (<= 320)"
        ),
        ModelSpec("tiny-qwen2.5-vl", "tiny:tiny-qwen2.5-vl", "qwen2_5_vl",
                  "offline random-weight Qwen2.5-VL twin (dynamic resolution, 391 tokens at VGA)"),
        ModelSpec("tiny-qwen2-vl", "tiny:tiny-qwen2-vl", "qwen2_vl",
                  "offline random-weight Qwen2-VL twin (full attention in every block)"),
        ModelSpec(
            "toyworld-llava-next",
            PACKAGED + "toyworld-llava-next",
            "llava_next",
            "LLaVA-NeXT trained here on toy-world scenes (offline default)",
        ),
        ModelSpec(
            "toyworld-v2-llava-next",
            PACKAGED + "toyworld-v2-llava-next",
            "llava_next",
            "LLaVA-NeXT trained here on toy world v2 (small objects beside a salient distractor)",
        ),
        ModelSpec(
            "toyworld-v2-qwen2.5-vl",
            PACKAGED + "toyworld-v2-qwen2.5-vl",
            "qwen2_5_vl",
            "Qwen2.5-VL trained here on toy world v2 (native resolution, global-attention saliency)",
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
    """A registered name, a local checkpoint directory, or a Hugging Face id already in the HF cache. A checkpoint
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
            raise ModelError(f"{config} is not a readable model config (corrupt JSON?): {first_line(e)}") from e
        archs.get(model_type, str(path))  # a family adafv knows (adafv.archs), or one line naming the others
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


@dataclasses.dataclass
class LoadedModel:
    """A VLM with its processor: what every reference path and exporter starts from."""

    spec: ModelSpec
    arch: archs.Arch
    model: Any  # the family's VLM class (arch.model_class())
    processor: Any

    @property
    def config(self):
        return self.model.config

    @property
    def patches_per_crop(self) -> int:
        return self.arch.patches_per_side(self.config) ** 2

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    def render_prompt(self, prompt: str) -> str:
        """The chat-formatted text for one image and one question, with the image placeholder in it."""
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        return self.arch.fallback_prompt(prompt)

    def prompt_template(self) -> tuple[str, str]:
        """The chat template around the question: (text before it, text after it); the image token is in `before`."""
        rendered = self.render_prompt(PROMPT_SENTINEL)
        if rendered.count(PROMPT_SENTINEL) != 1:
            raise ModelError(f"{self.spec.name}: the chat template does not place the prompt exactly once")
        before, after = rendered.split(PROMPT_SENTINEL)
        return before, after


def load(name_or_path: str | os.PathLike, dtype: str | None = None) -> LoadedModel:
    """Load model + processor. Tiny twins are built in memory; other sources load from disk or the HF cache."""
    spec = resolve(name_or_path)
    if spec.is_tiny:
        from . import tiny

        model, processor = tiny.build(spec.source.split(":", 1)[1])
    else:
        model, processor = _load_pretrained(spec, dtype)
        spec = dataclasses.replace(spec, arch=model.config.model_type)
    arch = archs.get(spec.arch, spec.name)
    arch.check(model.config, spec.name)
    model.eval()
    return LoadedModel(spec, arch, model, processor)


def peek(name_or_path: str | os.PathLike) -> tuple[archs.Arch, Any]:
    """(architecture, HF config) without loading any weights: for checks that must come before any work."""
    spec = resolve(name_or_path)
    if spec.is_tiny:
        from . import tiny

        config = tiny.config(spec.source.split(":", 1)[1])
    else:
        config = _pretrained_config(spec)
    arch = archs.get(config.model_type, spec.name)
    arch.check(config, spec.name)
    return arch, config


def _pretrained_config(spec: ModelSpec):
    from transformers import AutoConfig

    local = Path(spec.source).is_dir()
    try:
        return AutoConfig.from_pretrained(spec.source, **({} if local else {"local_files_only": True}))
    except OSError as e:
        if local:
            raise ModelError(f"cannot read the config of {spec.source}: {first_line(e)}") from e
        raise ModelError(
            f"cannot load {spec.source!r}: not a local directory and not in the Hugging Face cache "
            f"(adafv never downloads weights; download it with `hf download {spec.source}` where you have network)"
        ) from e


def _load_pretrained(spec: ModelSpec, dtype: str | None):
    import torch

    local = Path(spec.source).is_dir()
    kwargs: dict[str, Any] = {} if local else {"local_files_only": True}
    config = _pretrained_config(spec)
    model_class = archs.get(config.model_type, spec.source).model_class()
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype or "")
    try:
        model = model_class.from_pretrained(spec.source, dtype=torch_dtype or "auto", **kwargs)
        # the PIL backend: the torch-free runtime reproduces it bit for bit (torchvision's resize differs slightly)
        processor = archs.get(config.model_type, spec.source).load_processor(spec.source, **kwargs)
    except (OSError, ValueError) as e:  # no weights, truncated safetensors, a processor that does not load
        raise ModelError(f"cannot load {spec.source}: {first_line(e)}") from e
    return model, processor
