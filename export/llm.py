"""The LLM half of a bundle: the HF language model -> an ONNX decoder that takes `inputs_embeds` with a KV cache
(onnxruntime-genai's model builder, int4 or fp32), the input-embedding table as `embed.npy`, and the tokenizer."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from adafv.errors import AdafvError

LLM_PRECISIONS = ("int4", "fp32")


class LLMExportError(AdafvError):
    """The model builder failed."""


def causal_lm(model):
    """A standalone causal LM (e.g. LlamaForCausalLM, MistralForCausalLM) composed of the VLM's own language model
    and head: the modules are shared, not copied, so a 7B model is not held twice while it is saved."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # an empty shell: its own (meta) weights are replaced below
        lm = AutoModelForCausalLM.from_config(model.config.text_config)
    lm.model = model.model.language_model
    lm.lm_head = model.lm_head
    lm.generation_config = model.generation_config
    return lm.eval()


def export_llm(model, tokenizer, out_dir: Path, precision: str = "int4") -> dict:
    """Write `out_dir` (model.onnx + data + genai_config.json) and return the decoder's facts for the manifest."""
    if precision not in LLM_PRECISIONS:
        raise LLMExportError(f"unknown LLM precision {precision!r}; choose {', '.join(LLM_PRECISIONS)}")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="adafv-llm-") as tmp:
        hf_dir = Path(tmp) / "hf"
        causal_lm(model).save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        cmd = [
            sys.executable, "-m", "onnxruntime_genai.models.builder",
            "-i", str(hf_dir), "-o", str(out_dir), "-p", precision, "-e", "cpu",
            "-c", str(Path(tmp) / "cache"),
            "--extra_options", "exclude_embeds=true",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not (out_dir / "model.onnx").is_file():
            raise LLMExportError(f"onnxruntime-genai model builder failed:\n{proc.stderr[-3000:]}")
    for extra in ("tokenizer.json", "tokenizer_config.json"):  # the bundle keeps the tokenizer in tokenizer/
        (out_dir / extra).unlink(missing_ok=True)
    decoder = json.loads((out_dir / "genai_config.json").read_text())["model"]["decoder"]
    return {
        "dir": out_dir.name,
        "file": decoder["filename"],
        "precision": precision,
        "num_layers": decoder["num_hidden_layers"],
        "num_kv_heads": decoder["num_key_value_heads"],
        "head_size": decoder["head_size"],
        "hidden_size": decoder["hidden_size"],
        "inputs": decoder["inputs"],
        "outputs": decoder["outputs"],
        "max_length": int(model.config.text_config.max_position_embeddings),
    }


def export_embeddings(model, path: Path, dtype: str) -> dict:
    """The LLM's input-embedding table as .npy (fp16 beside an int4 decoder, fp32 beside an fp32 one)."""
    table = model.get_input_embeddings().weight.detach().float().numpy().astype(dtype)  # (V, D)
    np.save(path, table)
    return {"file": path.name, "dtype": dtype, "shape": list(table.shape)}


def export_tokenizer(processor, out_dir: Path) -> dict:
    """tokenizer.json (+ config) for the `tokenizers` library, and the special ids the runtime needs."""
    tokenizer = processor.tokenizer
    tokenizer.save_pretrained(out_dir)
    if not (out_dir / "tokenizer.json").is_file():
        raise LLMExportError("the tokenizer has no fast (tokenizer.json) form; the runtime needs one")
    return {"dir": out_dir.name}
