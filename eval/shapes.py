"""Real shapes with random weights, for benchmarks: LLaVA-NeXT's vision side (a CLIP-ViT-L/14-336 tower, 5 crops of
576 patches: 2,880 visual tokens) in front of an LLM shaped like Mistral-7B or like a ~1B Llama. Built from configs
with a fixed seed, never downloaded, saved once as an ordinary checkpoint folder in the cache and reused.

    shapes     tower                    LLM (Llama architecture)                              for
    tiny       the tiny twin            the tiny twin (2 layers, width 64)                    CI (--quick)
    llava-next-1b  CLIP-L/14-336, 24 layers  22 layers, width 2048, 32 heads, 4 KV heads, MLP 5632   CPUs
    llava-next-7b  CLIP-L/14-336, 24 layers  32 layers, width 4096, 32 heads, 8 KV heads, MLP 14336  GPUs
    tiny-qwen      the tiny Qwen2.5-VL twin  the tiny twin                                         CI
    qwen2.5-vl-0.5b  Qwen2.5-VL's tower (32 blocks, width 1280, 16 heads, full attention in 7/15/23/31, 112-px
                   windows)  24 layers, width 896, 14 heads, 2 KV heads, MLP 4864 (Qwen2.5-0.5B)     CPUs
    qwen2.5-vl-3b  the same tower            36 layers, width 2048, 16 heads, 2 KV heads, MLP 11008 (3B)  GPUs
    qwen2.5-vl-7b  the same tower            28 layers, width 3584, 28 heads, 4 KV heads, MLP 18944 (7B)  GPUs

Qwen shapes use M-RoPE sections [16, 24, 24] (0.5b: [8, 12, 12], its heads are 64 wide) and the Qwen twin's
tokenizer (its ids are a subset of the 151,936-row
table); their bundles are built at 644x476, what the processor gives a 640x480 camera frame.

The tokenizer is the tiny twins' small BPE (its ids are a subset of the 32,000-row embedding table): the prompt's
token count differs from LLaVA's tokenizer by a few tokens, which changes no timing that matters.
"""

from __future__ import annotations

import os
from pathlib import Path

SHAPES = ("tiny", "llava-next-1b", "llava-next-7b", "tiny-qwen", "qwen2.5-vl-0.5b", "qwen2.5-vl-3b", "qwen2.5-vl-7b")
QWEN_TOWER = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, window_size=112,
                  spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[7, 15, 23, 31])  # fmt: skip
QWEN_LLMS = {
    "qwen2.5-vl-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                            num_key_value_heads=2),
    "qwen2.5-vl-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                          num_key_value_heads=2),
    "qwen2.5-vl-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                          num_key_value_heads=4),
}  # fmt: skip
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # LLaVA-NeXT's
CLIP_L = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336,
              patch_size=14, projection_dim=768)  # fmt: skip
LLMS = {
    "llava-next-1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                          num_key_value_heads=4, vocab_size=32000, max_position_embeddings=4096),
    "llava-next-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=8, vocab_size=32000, max_position_embeddings=32768),
}  # fmt: skip


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "adafv" / "shapes"


def checkpoint(shapes: str, seed: int = 0, device: str = "cpu") -> str:
    """A registered name (tiny) or the folder of the random-weight checkpoint for `shapes`, made on first use.
    `device` "cuda": initialised on the GPU and saved in float16 (a 7B checkpoint in float32 on the CPU is 30 GB and
    minutes of a GPU host's short window); its weights differ from the CPU's (another random generator)."""
    if shapes == "tiny":
        return "tiny-llava-next"
    if shapes == "tiny-qwen":
        return "tiny-qwen2.5-vl"
    if shapes not in LLMS and shapes not in QWEN_LLMS:
        from adafv.errors import ConfigError

        raise ConfigError(f"unknown shapes {shapes!r}; choose {', '.join(SHAPES)}")
    if device not in ("cpu", "cuda"):
        from adafv.errors import ConfigError

        raise ConfigError(f"unknown device {device!r}; choose cpu or cuda")
    out = cache_dir() / (f"{shapes}-seed{seed}" + ("-cuda-fp16" if device == "cuda" else ""))
    if not (out / "model.safetensors.index.json").is_file() and not (out / "model.safetensors").is_file():
        _save(shapes, seed, out, device, half=device == "cuda")
    return str(out)


def _save(shapes: str, seed: int, out: Path, device: str = "cpu", half: bool = False) -> None:
    """Build the random-weight model on `device` (float32 initialisation, as on the CPU), optionally cast to float16,
    and save it with its processor; written to a partial folder, then renamed into place."""
    import shutil

    import torch

    with torch.device(device):
        model, processor = _build(shapes, seed)
    if half:
        model = model.half()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    processor.save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)


def _build(shapes: str, seed: int):
    """(model, processor) of `shapes` with seeded random weights, on the current default device."""
    from adafv import archs, tiny

    if shapes in QWEN_LLMS:
        tokenizer = tiny.qwen_tokenizer()
        width = QWEN_LLMS[shapes]["hidden_size"]
        half = width // QWEN_LLMS[shapes]["num_attention_heads"] // 2  # M-RoPE covers half of each head
        sections = [16, 24, 24] if half == 64 else [half // 4, 3 * half // 8, 3 * half // 8]
        text = {**QWEN_LLMS[shapes], "vocab_size": 151936, "max_position_embeddings": 32768,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": sections},
                "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
                "tie_word_embeddings": False}  # fmt: skip
        model, processor = archs.get("qwen2_5_vl").build({**QWEN_TOWER, "out_hidden_size": width}, text, tokenizer,
                                                         seed=seed, chat_template=tiny.QWEN_CHAT_TEMPLATE)  # fmt: skip
    else:
        tokenizer = tiny.hf_tokenizer()
        text = {**LLMS[shapes], "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id, "tie_word_embeddings": False}  # fmt: skip
        family = archs.get("llava_next")
        model, processor = family.build(CLIP_L, text, tokenizer, seed=seed, chat_template=tiny.CHAT_TEMPLATE,
                                        pinpoints=PINPOINTS)  # fmt: skip
    return model, processor
