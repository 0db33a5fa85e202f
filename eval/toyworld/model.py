"""The toy-world LLaVA-NeXT built from configs: a CLIP-style tower with [CLS], a Llama-style LLM, LLaVA's MLP
projector, a word-level tokenizer over the toy vocabulary and the model's own HF processor (anyres over 64-px crops).

Sizes (defaults): tower 4 layers x 96 wide on 64-px crops of 8-px patches (P = 64 patches per crop, up to N = 5
crops: 320 visual tokens crop-major, 336 in the stock packing with unpadding and newline tokens); LLM 4 layers x 128
wide; about 1.4 M parameters in all. `vision_feature_layer=-2` and the "default" strategy (drop [CLS]) as in every
LLaVA-1.6 checkpoint, so adafv's saliency is the [CLS] row of the tower's third layer.
"""

from __future__ import annotations

from pathlib import Path

from adafv.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS  # LLaVA's `USER: <image>\n... ASSISTANT:` template

from . import scenes
from .scenes import CROP, PATCH

VISION = dict(hidden_size=96, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4)
TEXT = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4)


def build_tokenizer(words=scenes.WORDS):
    """A `tokenizers.Tokenizer`: one id per word of the toy vocabulary (WordLevel), '?', '.' and ',' split off,
    `<s>` prepended. Ids: the special tokens first (<unk> 0, <s> 1, </s> 2, <pad> 3, <image> 4), then `words` (a
    world's WORDS)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(SPECIAL_TOKENS + list(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[?.,]"), behavior="isolated")]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return tok


def hf_tokenizer(words=scenes.WORDS):
    """The word-level tokenizer as a transformers fast tokenizer with LLaVA's special tokens."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(words),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="right",
    )


def build(seed: int = 0, vision: dict | None = None, text: dict | None = None, world=scenes):
    """A freshly initialised (model, processor) for a world (`scenes` or `scenes_v2`: its vocabulary and anyres
    grids); `vision` / `text` override entries of VISION / TEXT."""
    from adafv import archs

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


def save(model, processor, out_dir: str | Path) -> Path:
    """Write an ordinary local checkpoint: config, safetensors weights, generation config, processor, tokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
