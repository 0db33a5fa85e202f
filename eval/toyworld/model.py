"""The toy-world VLMs built from configs, in two families (FAMILIES):

* LLaVA-NeXT (`llava_next`): a CLIP-style tower with [CLS], a Llama-style LLM, LLaVA's MLP projector, a word-level
  tokenizer over the toy vocabulary and the model's own HF processor (anyres over 64-px crops);
* Qwen2.5-VL (`qwen2_5_vl`): Qwen2.5-VL's own tower (no [CLS], 2-D rotary, window attention with full attention in
  blocks 1 and 3), its 2x2 PatchMerger and a Qwen2 LLM with M-RoPE, Qwen's special tokens and chat template, and
  its image processor at the scene's native resolution (QWEN_VISION, QWEN_TEXT, QWEN_PIXELS).

Sizes (defaults): tower 4 layers x 96 wide on 64-px crops of 8-px patches (P = 64 patches per crop, up to N = 5
crops: 320 visual tokens crop-major, 336 in the stock packing with unpadding and newline tokens); LLM 4 layers x 128
wide; about 1.4 M parameters in all. `vision_feature_layer=-2` and the "default" strategy (drop [CLS]) as in every
LLaVA-1.6 checkpoint, so adafv's saliency is the [CLS] row of the tower's third layer.
"""

from __future__ import annotations

from pathlib import Path

from adafv.tiny import CHAT_TEMPLATE, QWEN_CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS, SPECIAL_TOKENS

from . import scenes
from .scenes import CROP, PATCH

VISION = dict(hidden_size=96, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4)
TEXT = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4)

FAMILIES = ("llava_next", "qwen2_5_vl")
# Qwen2.5-VL in miniature, at the scenes' native resolution: 8-px patches (a merged token is 16 px: a small object
# of 20-26 px covers about four), windows of 4x4 merged cells, full attention in blocks 1 and 3 (the saliency block
# is the last one, 3). 96 wide like the LLaVA tower.
QWEN_VISION = dict(depth=4, hidden_size=96, intermediate_size=384, num_heads=4, patch_size=PATCH, spatial_merge_size=2,
                   temporal_patch_size=2, window_size=64, fullatt_block_indexes=[1, 3])  # fmt: skip
# The LLM: the LLaVA toy's size, M-RoPE over head_dim 32. rope_theta 10 and sections [2, 7, 7], not Qwen's 1e6 and
# [16, 24, 24] (scaled: [4, 6, 6]): across a merged grid of at most 8 cells a side, Qwen's theta would turn the width
# frequencies by under a thousandth of a radian and the height ones by a quarter at most; at 10 every one turns by
# 0.8-5 radians, so the LLM can tell where a token sits.
QWEN_TEXT = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4, rope_parameters={"rope_type": "default", "rope_theta": 10.0,
                                                         "mrope_section": [2, 7, 7]})  # fmt: skip
QWEN_PIXELS = ((2 * PATCH) ** 2, (8 * 2 * PATCH) ** 2)  # (min, max) pixels: images keep their size (multiples of 16)
QWEN_WORDS = ["system", "user", "assistant", "You", "helpful"]  # the chat template's words not in a world's WORDS


def build_tokenizer(words=scenes.WORDS, family: str = "llava_next"):
    """A `tokenizers.Tokenizer`: one id per word of the toy vocabulary (WordLevel), '?', '.' and ',' split off.
    LLaVA: `<s>` prepended; ids: the special tokens first (<unk> 0, <s> 1, </s> 2, <pad> 3, <image> 4), then `words`
    (a world's WORDS). Qwen: no BOS (as Qwen's tokenizer); ids: Qwen's special tokens (<|endoftext|> 0 ...), then
    `words` and the chat template's own words."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    qwen = family == "qwen2_5_vl"
    specials = QWEN_SPECIAL_TOKENS if qwen else SPECIAL_TOKENS
    vocab_words = list(words) + ([w for w in QWEN_WORDS if w not in words] if qwen else [])
    vocab = {w: i for i, w in enumerate(specials + vocab_words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[0]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[?.,]"), behavior="isolated")]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tok.add_special_tokens(specials)
    if not qwen:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
        )
    return tok


def hf_tokenizer(words=scenes.WORDS, family: str = "llava_next"):
    """The word-level tokenizer as a transformers fast tokenizer with the family's special tokens."""
    from transformers import PreTrainedTokenizerFast

    if family == "qwen2_5_vl":
        return PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(words, family), eos_token="<|im_end|>",
                                       pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                                       extra_special_tokens={"image_token": "<|image_pad|>"},
                                       padding_side="right")  # fmt: skip
    return PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(words),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="right",
    )


def build(seed: int = 0, vision: dict | None = None, text: dict | None = None, world=scenes,
          family: str = "llava_next"):  # fmt: skip
    """A freshly initialised (model, processor) of a family (FAMILIES) for a world (`scenes` or `scenes_v2`: its
    vocabulary and anyres grids); `vision` / `text` override entries of VISION / TEXT (QWEN_VISION / QWEN_TEXT)."""
    from adafv import archs

    if family not in FAMILIES:
        raise ValueError(f"unknown toy-world family {family!r}: one of {', '.join(FAMILIES)}")
    if family == "qwen2_5_vl":
        return _build_qwen(seed, vision, text, world)
    tokenizer = hf_tokenizer(world.WORDS)
    vision_config = {**VISION, **(vision or {}), "image_size": CROP, "patch_size": PATCH,
                     "projection_dim": VISION["hidden_size"]}  # fmt: skip
    text_config = {**TEXT, **(text or {}), "vocab_size": len(tokenizer), "max_position_embeddings": 1024,
                   "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id, "tie_word_embeddings": False}  # fmt: skip
    model, processor = archs.get("llava_next").build(
        vision_config, text_config, tokenizer, seed=seed, chat_template=CHAT_TEMPLATE, pinpoints=world.PINPOINTS
    )
    model.train()  # as a fresh module is, for training
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, processor


def _build_qwen(seed: int, vision: dict | None, text: dict | None, world):
    from adafv import archs

    tokenizer = hf_tokenizer(world.WORDS, "qwen2_5_vl")
    text_config = {**QWEN_TEXT, **(text or {}), "vocab_size": len(tokenizer), "max_position_embeddings": 1024,
                   "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id, "tie_word_embeddings": False}  # fmt: skip
    vision_config = {**QWEN_VISION, **(vision or {}), "out_hidden_size": text_config["hidden_size"]}
    model, processor = archs.get("qwen2_5_vl").build(
        vision_config, text_config, tokenizer, seed=seed, chat_template=QWEN_CHAT_TEMPLATE,
        min_pixels=QWEN_PIXELS[0], max_pixels=QWEN_PIXELS[1]
    )  # fmt: skip
    model.train()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model, processor


def save(model, processor, out_dir: str | Path) -> Path:
    """Write an ordinary local checkpoint: config, safetensors weights, generation config, processor, tokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
