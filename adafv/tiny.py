"""Offline tiny twins of LLaVA-1.5, LLaVA-NeXT, Qwen2.5-VL and Qwen2-VL: random weights from a seed, a small real BPE
tokenizer, a chat template with the image placeholder, and the model's own HF processor. Nothing is downloaded.

The towers are CLIP-style with a [CLS] token (56 px images, 7 px patches: P = 64 patches per crop); the LLMs are
Llama-style. Everything is built deterministically: the same seed gives the same weights and the same tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
IMAGE_SIZE = 56
PATCH_SIZE = 7
# LLaVA-NeXT's pinpoints (1x2, 2x1, 2x2, 3x1, 1x3 crops of 336 px) scaled to 56 px crops
PINPOINTS = [[56, 112], [112, 56], [112, 112], [168, 56], [56, 168]]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% else %} ASSISTANT: {% for c in message['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)

_WORDS = (
    "a an the this that these those is are was were be has have had do does what which who where when why how "
    "many much there here in on at of to from with without and or but not no yes it its picture image photo "
    "scene camera robot object objects thing things left right top bottom middle center corner near far above "
    "below behind front next between small large big tiny huge little round square circle triangle star cross "
    "heart ring bar red green blue yellow orange purple white black gray brown pink color colour shape size "
    "count number one two three four five six seven eight nine ten zero person people cat dog car road tree sky "
    "cloud sun water table chair cup coffee astronaut rocket street house window door wall floor light dark "
    "describe tell me please answer question word single short sentence see look shown show can could would USER "
    "ASSISTANT "
    "should kind type background foreground texture pattern stripe stripes dot dots noise clutter"
)


def _corpus() -> list[str]:
    words = _WORDS.split()
    lines = []
    for i in range(0, len(words), 7):
        chunk = words[i : i + 7]
        lines.append(" ".join(chunk))
        lines.append("What is " + " ".join(chunk[:3]) + "?")
    lines += [
        "What is in the picture?",
        "What color is the small triangle?",
        "Is there a green star?",
        "Where is the blue circle?",
        "How many squares are there?",
        "The image shows a cat on a table next to a cup of coffee.",
        "An astronaut stands in front of a rocket under a blue sky.",
    ]
    return lines * 3


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on a fixed built-in corpus; returns a `tokenizers.Tokenizer`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tok


def hf_tokenizer(tok=None):
    """Wrap a `tokenizers.Tokenizer` as a transformers fast tokenizer with LLaVA's special tokens."""
    from transformers import PreTrainedTokenizerFast

    tok = tok or build_tokenizer()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )


def _vision_config(**overrides):
    from transformers import CLIPVisionConfig

    cfg = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    cfg.update(overrides)
    return CLIPVisionConfig(**cfg)


def _text_config(tokenizer, **overrides):
    from transformers import LlamaConfig

    cfg = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    cfg.update(overrides)
    return LlamaConfig(**cfg)


QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]
QWEN_CHAT_TEMPLATE = (  # Qwen2-VL's template for one turn of images and text (its default system message)
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_MAX_PIXELS = 28 * 28 * 1280  # the tiny twin's processor keeps Qwen's own pixel range (VGA: 391 tokens)


def qwen_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer with Qwen's special tokens (a transformers fast tokenizer, no BOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=QWEN_SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   extra_special_tokens={"image_token": "<|image_pad|>"})  # fmt: skip


def _qwen_configs(tokenizer):
    """Qwen2.5-VL's tower in miniature (4 blocks, full attention in blocks 1 and 3, 112-px windows = 4x4 merged
    cells) and a 2-layer Qwen2 LLM with M-RoPE sections [2, 3, 3] (head_dim 16)."""
    vision = dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1, 3], out_hidden_size=64)
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
                bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                tie_word_embeddings=False)  # fmt: skip
    return vision, text


def _qwen2_configs(tokenizer):
    """Qwen2-VL's tower in miniature (3 blocks of full attention, width 32, a GELU MLP) and the same LLM."""
    vision = dict(depth=3, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)  # fmt: skip
    return vision, _qwen_configs(tokenizer)[1]


NAMES = {"tiny-llava": "llava", "tiny-llava-next": "llava_next", "tiny-qwen2.5-vl": "qwen2_5_vl",
         "tiny-qwen2-vl": "qwen2_vl"}  # twin -> its architecture family  # fmt: skip
QWEN_CONFIGS = {"qwen2_5_vl": _qwen_configs, "qwen2_vl": _qwen2_configs}


def _family(name: str):
    from . import archs

    if name not in NAMES:
        raise ValueError(f"no tiny model named {name!r}")
    return archs.get(NAMES[name])


def build(name: str, seed: int = 0):
    """Build a tiny twin through its family's builder: (model, processor), float32, eval."""
    family = _family(name)
    if family.name in QWEN_CONFIGS:
        tokenizer = qwen_tokenizer()
        return family.build(*QWEN_CONFIGS[family.name](tokenizer), tokenizer, seed=seed,
                            chat_template=QWEN_CHAT_TEMPLATE, max_pixels=QWEN_MAX_PIXELS)  # fmt: skip
    tokenizer = hf_tokenizer()
    return family.build(_vision_config(), _text_config(tokenizer), tokenizer, seed=seed,
                        chat_template=CHAT_TEMPLATE, pinpoints=PINPOINTS)  # fmt: skip


def config(name: str):
    """The HF config of a tiny twin (no weights)."""
    family = _family(name)
    if family.name in QWEN_CONFIGS:
        tokenizer = qwen_tokenizer()
        return family.config(*QWEN_CONFIGS[family.name](tokenizer), tokenizer)
    tokenizer = hf_tokenizer()
    return family.config(_vision_config(), _text_config(tokenizer), tokenizer, pinpoints=PINPOINTS)


def save(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny model as an ordinary local checkpoint directory (weights, config, processor, tokenizer)."""
    model, processor = build(name, seed)
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "adafv_tiny.json").write_text(json.dumps({"name": name, "seed": seed}))
    return out
