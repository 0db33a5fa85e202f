"""The PyTorch reference pipeline: the model's own HF processor, our vision module, AdaFV (or a baseline), then
greedy generation through the HF LLM with `inputs_embeds`.

    [embeds of the text before the image | kept visual tokens in reading order | embeds of the text after it]

With no reduction (method `full`, or keep >= all visual tokens) the image features are the stock ones (unpadding
and newline tokens included), so the answer is exactly what transformers' own `generate` gives.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from . import methods
from .answer import Answer
from .config import AdaFVConfig
from .errors import InputError
from .methods import select
from .models import LoadedModel, load
from .relevance import text_relevance
from .vision import ZipTokens, reading_order, rows_layout


@dataclasses.dataclass
class Prepared:
    """One image and prompt after the HF processor."""

    inputs: dict[str, torch.Tensor]  # the processor's output: input_ids (1, L), pixel_values, image_sizes, ...
    pixel_values: torch.Tensor  # (N, 3, S, S) the crops actually used
    image_size: tuple[int, int]  # (height, width) of the original image
    grid: tuple[int, int]  # (rows, cols) of high-resolution crops; (1, 1) without anyres
    pre_ids: torch.Tensor  # (n_pre,) text before the image
    post_ids: torch.Tensor  # (n_post,) text after the image: the question, instructions, assistant prefix
    patch_grid: tuple[int, int] | None = None  # (rows, cols) of patches of a dynamic-resolution image (Qwen)
    merged_grid: tuple[int, int] | None = None  # (rows, cols) of its merged tokens: kept positions index this grid

    @property
    def num_crops(self) -> int:
        return self.pixel_values.shape[0]


@dataclasses.dataclass
class Analysis:
    """One image and question through the processor and the tower, once: all that any selection needs. Answering
    several configs from one Analysis (`Reference.answer`) gives what `Reference.run` gives for each."""

    prepared: Prepared
    hidden: torch.Tensor  # (N, P, C) the feature layer's patch features, before the projector
    saliency: torch.Tensor  # (N, P) its [CLS] attention
    keys: torch.Tensor  # (N, P, E) its attention keys, mean over heads (VisionZip)
    tokens: torch.Tensor  # (N, P, D) projected visual tokens
    relevance: torch.Tensor  # (N*P,) text-to-image relevance of the question
    timings_ms: dict[str, float]  # preprocess, vision


def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise InputError(f"the prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise InputError("the prompt is empty: ask a question about the image")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"the prompt is not valid text: character {e.start} is a lone surrogate "
                         f"({prompt[e.start]!r}); is it UTF-8?") from None  # fmt: skip
    return prompt


def check_image(image: Any):
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise InputError(f"the image must be a PIL.Image (decode files with adafv.runtime.load_image), got {image!r}")
    if image.width < 1 or image.height < 1:
        raise InputError(f"the image is empty ({image.width}x{image.height})")
    return image  # the HF processor converts to RGB (transparency onto white)


class Reference:
    """PyTorch reference path for one loaded VLM."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.model = loaded.model
        self.processor = loaded.processor
        self.visual = self.loaded.arch.visual(self.model).eval()
        self.embed = self.model.get_input_embeddings()

    @classmethod
    def load(cls, name_or_path, dtype: str | None = None) -> Reference:
        return cls(load(name_or_path, dtype))

    # -- stages ---------------------------------------------------------------------------------------------------

    def prepare(self, image, prompt: str) -> Prepared:
        image = check_image(image)
        prompt = check_prompt(prompt)
        placeholder = self.processor.tokenizer.convert_ids_to_tokens(self.loaded.image_token_id)
        if placeholder in prompt:
            raise InputError(f"the prompt must not contain the image placeholder {placeholder!r} itself")
        text = self.loaded.render_prompt(prompt)
        inputs = dict(self.processor(images=image, text=text, return_tensors="pt"))
        ids = inputs["input_ids"][0]  # (L,)
        where = (ids == self.loaded.image_token_id).nonzero().flatten()
        if where.numel() == 0:
            raise InputError("the chat template produced no image placeholder")
        pixel_values = inputs["pixel_values"]
        size = (image.height, image.width)
        arch = self.loaded.arch
        grid = arch.grid(self.model.config, size)
        if pixel_values.dim() == 5:  # (1, max_crops, 3, S, S), padded: keep the crops of this image
            pixel_values = pixel_values[0, : 1 + grid[0] * grid[1]]
        patch_grid = merged = None
        if arch.positions == "mrope":  # (rows*cols, 3*2*14*14) patches of one dynamic-resolution image
            patch_grid = arch.patch_grid(inputs)
            merged = arch.merged_grid(self.model.config, patch_grid)
        return Prepared(inputs, pixel_values, size, grid, ids[: where[0]], ids[where[-1] + 1 :], patch_grid, merged)

    @torch.no_grad()
    def scores(self, prepared: Prepared):
        """tokens (N, P, D), saliency (N, P), relevance (N*P,)."""
        _, saliency, _, tokens, relevance = self._tower(prepared)
        return tokens, saliency, relevance

    def _tower(self, prepared: Prepared):
        """One pass of the tower: hidden (N, P, C), saliency (N, P), keys (N, P, E), tokens (N, P, D), relevance."""
        extra = () if prepared.patch_grid is None else (prepared.patch_grid,)
        hidden, saliency, keys = self.visual.hidden(prepared.pixel_values, *extra)  # (N, P, C), (N, P), (N, P, E)
        tokens = self.visual.projector(hidden)  # (N, P, D)
        N, P, D = tokens.shape
        text = self.embed(prepared.post_ids)  # (T, D)
        relevance = text_relevance(tokens.reshape(1, N * P, D), text[None])[0]  # (NP,)
        return hidden, saliency, keys, tokens, relevance

    @torch.no_grad()
    def stock_image_features(self, prepared: Prepared) -> torch.Tensor:
        """The stock transformers image features (anyres packing, unpadding, newline tokens): (n_image_tokens, D)."""
        return self.loaded.arch.stock_image_features(self.model, prepared.inputs)

    def _eos(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.processor.tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos])

    @torch.no_grad()
    def generate(self, prepared: Prepared, visual_embeds: torch.Tensor, max_new_tokens: int,
                 positions: torch.Tensor | None = None) -> list[int]:  # fmt: skip
        """Greedy decoding from [pre | visual | post] embeddings; returns the new token ids (EOS excluded).
        `positions` (kept positions, ascending): the LLM's M-RoPE positions follow the kept tokens' cells."""
        dtype = self.embed.weight.dtype
        embeds = torch.cat(
            [self.embed(prepared.pre_ids), visual_embeds.to(dtype), self.embed(prepared.post_ids)], dim=0
        )[None]  # (1, L, D)
        if self.loaded.arch.positions == "mrope":
            return self._generate_mrope(prepared, embeds, positions, max_new_tokens)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        tokenizer = self.processor.tokenizer
        out = self.model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
        ids = out[0].tolist()
        eos = self._eos()
        for i, t in enumerate(ids):
            if t in eos:
                return ids[:i]
        return ids

    def _generate_mrope(self, prepared: Prepared, embeds, positions, max_new_tokens: int) -> list[int]:
        """A greedy loop with 3-D positions given (transformers' generate would renumber the pruned sequence)."""
        from .positions import cells, mrope, next_position

        grid = prepared.merged_grid
        layout = mrope(len(prepared.pre_ids), cells(positions.numpy(), grid[1]), grid, len(prepared.post_ids))
        position_ids = torch.from_numpy(layout)[:, None]  # (3, 1, L)
        nxt, eos, ids, past = next_position(layout), self._eos(), [], None
        step_embeds = embeds
        for _ in range(max_new_tokens):
            out = self.model(inputs_embeds=step_embeds, position_ids=position_ids, past_key_values=past,
                             use_cache=True)  # fmt: skip
            past = out.past_key_values
            token = int(out.logits[0, -1].argmax())
            if token in eos:
                break
            ids.append(token)
            step_embeds = self.embed(torch.tensor([[token]]))  # (1, 1, D)
            position_ids = torch.full((3, 1, 1), nxt, dtype=torch.long)
            nxt += 1
        return ids

    # -- the whole thing ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def analyse(self, image, prompt: str) -> Analysis:
        """The processor and one pass of the tower (features, saliency, keys, projected tokens, relevance)."""
        t0 = time.perf_counter()
        prepared = self.prepare(image, prompt)
        t1 = time.perf_counter()
        tower = self._tower(prepared)
        t2 = time.perf_counter()
        timings = {"preprocess": round((t1 - t0) * 1000, 3), "vision": round((t2 - t1) * 1000, 3)}
        return Analysis(prepared, *tower, timings)

    @torch.no_grad()
    def run(self, image, prompt: str, config: AdaFVConfig, max_new_tokens: int = 32) -> dict[str, Any]:
        """Answer a question about an image; returns the JSON-ready result (text, kept positions, timings)."""
        self._check_options(config, max_new_tokens)
        return self.answer(self.analyse(image, prompt), config, max_new_tokens)

    def _side(self) -> int | None:
        """Patches per crop side for the reading order; None for one dynamic-resolution image (raster order)."""
        return None if self.loaded.arch.positions == "mrope" else self.visual.patches_per_side

    @staticmethod
    def _check_options(config: AdaFVConfig, max_new_tokens: int) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        if not isinstance(config, AdaFVConfig):
            raise InputError(f"config must be an adafv.AdaFVConfig, got {type(config).__name__}")

    @torch.no_grad()
    def answer(self, analysis: Analysis, config: AdaFVConfig, max_new_tokens: int = 32) -> dict[str, Any]:
        """The selection of `config` over an Analysis, then greedy generation: `run` without the analysis."""
        self._check_options(config, max_new_tokens)
        prepared, tokens, saliency = analysis.prepared, analysis.tokens, analysis.saliency
        N, P, D = tokens.shape
        full = config.method == "full" or config.keep >= N * P
        t2 = time.perf_counter()
        if full:
            positions = torch.arange(N * P)
            visual = self.stock_image_features(prepared)
        else:
            if methods.get(config.method).merges:  # visionzip merges in the tower's feature space, before the projector
                zip_tokens = ZipTokens(config, self._side())
                features, ordered, _ = zip_tokens(analysis.hidden, saliency, analysis.keys, prepared.grid[1])
                kept = self.visual.projector(features)  # (K, D) reading order
                positions = ordered.sort().values  # (K,) crop-major ascending
            else:
                positions = select(
                    config.method,
                    saliency[None],
                    analysis.relevance[None],
                    config.keep,
                    mode=config.mode,
                    legacy_offset=config.legacy_offset,
                    seed=config.seed,
                    tokens=tokens.reshape(1, N * P, D),
                )[0]  # (K,) crop-major ascending
                ordered = reading_order(positions[None], self._side(), prepared.grid[1])[0]  # (K,)
                kept = tokens.reshape(N * P, D).index_select(0, ordered)  # (K, D) reading order
            if config.layout == "rows" and self.loaded.arch.anyres:
                newline = self.loaded.arch.newline(self.model)  # (D,)
                visual = rows_layout(ordered, kept, newline, self.visual.patches_per_side, prepared.grid[1])
            else:
                visual = kept  # (K, D)
        t3 = time.perf_counter()
        ids = self.generate(prepared, visual, max_new_tokens, positions)
        t4 = time.perf_counter()
        ms = lambda a, b: round((b - a) * 1000, 3)  # noqa: E731
        return Answer(
            model=self.loaded.spec.name,
            path="reference",
            method="full" if full else config.method,
            mode=config.mode,
            layout="stock" if full else config.layout if self.loaded.arch.anyres else "compact",
            keep=config.keep,
            text=self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip(),
            tokens=ids,
            kept_positions=positions.tolist(),
            num_visual_tokens=N * P,
            num_llm_visual_tokens=int(visual.shape[0]),
            num_crops=N,
            grid=list(prepared.grid),
            merged_grid=list(prepared.merged_grid) if prepared.merged_grid else None,
            timings_ms={
                **analysis.timings_ms,
                "select": ms(t2, t3),
                "generate": ms(t3, t4),
                "total": round(sum(analysis.timings_ms.values()) + ms(t2, t4), 3),
            },
        ).to_dict()
