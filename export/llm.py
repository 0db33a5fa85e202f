"""The LLM half of a bundle: the HF language model -> an ONNX decoder that takes `inputs_embeds` with a KV cache
(onnxruntime-genai's model builder, int4 or fp32 weights, for a target), the input-embedding table as `embed.npy`,
the tokenizer, and the check that the decoder it wrote really runs.

Targets (`-e` of the builder):
* `cpu`: float32 activations and KV cache.
* `cuda` (desktop GPUs and Jetson): float16 activations, inputs and KV cache; int4 weights run in MatMulNBits' CUDA
  kernels. Such a decoder also runs (slowly) on ONNX Runtime's CPU provider, which is how CI checks it.
Both are built with `prune_lm_head=true`: the prefill computes the logits of the last position only (a 2,920-token
prefill would otherwise return 2,920 x 32,000 logits).

The builder runs as a subprocess in its own process group with its scratch files inside the bundle's partial folder:
an interrupted build kills it and removes what it wrote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from .errors import BuildError

LLM_PRECISIONS = ("int4", "fp32")
# The oldest ONNX Runtime that runs what this builder (onnxruntime-genai 0.18) writes, measured on every release from
# 1.19 (README, "Installing"): up to 1.20 it rejects the decoder's opset 22, 1.21 and 1.22 its 12-input
# GroupQueryAttention; 1.23.0 to 1.32 give identical tokens. JetPack 6's onnxruntime-gpu is 1.23.0. Written into every
# manifest; checked at load (`make test-floor` runs 1.23.0 and checks that 1.22 is refused).
MIN_ONNXRUNTIME = "1.23"


class LLMExportError(BuildError):
    """The model builder failed, or the decoder it wrote does not run."""


def causal_lm(model):
    """A standalone causal LM (e.g. LlamaForCausalLM, MistralForCausalLM) composed of the VLM's own language model
    and head by its architecture family: the modules are shared, not copied, so a 7B model is not held twice."""
    from adafv import archs

    return archs.get(model.config.model_type).language_model(model)


# Runs the builder so that it dies with us, even by SIGKILL: on Linux the child asks the kernel for SIGKILL when its
# parent goes (prctl PR_SET_PDEATHSIG), then checks the parent did not go before that; elsewhere it just runs.
_LAUNCH = """
import ctypes, os, runpy, signal, sys
parent = int(sys.argv.pop(1))
try:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit(1)
sys.argv[0] = "builder"
runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)
"""


def builder_command(hf_dir: Path, out_dir: Path, cache: Path, precision: str, target: str) -> list[str]:
    return [
        sys.executable, "-c", _LAUNCH, str(os.getpid()),
        "-i", str(hf_dir), "-o", str(out_dir), "-p", precision, "-e", target, "-c", str(cache),
        "--extra_options", "exclude_embeds=true", "prune_lm_head=true",
    ]  # fmt: skip


def _run_builder(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run the builder in its own process group; if we are interrupted, the whole group dies with us."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate()
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _cause(text: str) -> str:
    """The line of a builder's traceback that says what went wrong (its last non-empty line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def export_llm(model, tokenizer, out_dir: Path, scratch: Path, precision: str = "int4", target: str = "cpu") -> dict:
    """Write `out_dir` (model.onnx + data + genai_config.json) and return the decoder's facts for the manifest.
    `scratch`: a folder for the HF copy and the builder's cache (inside the partial bundle; removed here)."""
    import shutil

    if precision not in LLM_PRECISIONS:
        raise LLMExportError(f"unknown LLM precision {precision!r}; choose {', '.join(LLM_PRECISIONS)}")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_dir = scratch / "hf"
    try:
        causal_lm(model).save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        proc = _run_builder(builder_command(hf_dir, out_dir, scratch / "cache", precision, target))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if proc.returncode != 0 or not (out_dir / "model.onnx").is_file():
        raise LLMExportError(f"onnxruntime-genai's model builder failed: {_cause(proc.stderr or proc.stdout)}")
    for extra in ("tokenizer.json", "tokenizer_config.json"):  # the bundle keeps the tokenizer in tokenizer/
        (out_dir / extra).unlink(missing_ok=True)
    decoder = json.loads((out_dir / "genai_config.json").read_text())["model"]["decoder"]
    return {
        "dir": out_dir.name,
        "file": decoder["filename"],
        "precision": precision,
        "target": target,
        "num_layers": decoder["num_hidden_layers"],
        "num_kv_heads": decoder["num_key_value_heads"],
        "head_size": decoder["head_size"],
        "hidden_size": decoder["hidden_size"],
        "inputs": decoder["inputs"],
        "outputs": decoder["outputs"],
        "max_length": int(model.config.text_config.max_position_embeddings),
        "io": decoder_io(out_dir / decoder["filename"]),
    }


def decoder_io(path: Path) -> dict[str, str]:
    """{name: ONNX element type} of the decoder's inputs_embeds, first KV input and logits, read from the graph."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    names = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    kinds = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32"}
    pick = {"inputs_embeds": "inputs_embeds", "past_key_values": "past_key_values.0.key", "logits": "logits"}
    return {k: kinds.get(names[n].type.tensor_type.elem_type, "?") for k, n in pick.items() if n in names}


def verify_decoder(model, root: Path, llm: dict, table: np.ndarray, prompts: list[list[int]], steps: int = 4) -> dict:
    """Run the decoder the builder wrote, in ONNX Runtime on the CPU, against the PyTorch LM on the same embeddings:
    a prefill and `steps` greedy tokens per prompt. Fails (LLMExportError, one line) when ONNX Runtime refuses the
    graph or cannot run it (e.g. GroupQueryAttention with a head size that is not a multiple of 16), when it returns
    non-finite logits, or, for fp32 weights on the cpu target, when the logits differ beyond tolerance. Reduced
    precisions (int4 weights, fp16 activations) are reported, not judged: the first-token and greedy agreement."""
    from adafv.runtime.errors import RuntimeFailure
    from adafv.runtime.llm import Decoder, Sampler

    try:
        decoder = Decoder(root, llm, ["CPUExecutionProvider"])
    except RuntimeFailure as e:
        raise LLMExportError(f"the decoder does not load: {e}") from e
    lm = causal_lm(model)
    first, same, total, worst = 0, 0, 0, 0.0
    for ids in prompts:
        embeds = np.asarray(table[ids], dtype=np.float32)  # (L, D) the bundle's own table
        logits: list[np.ndarray] = []
        try:
            got = decoder.generate(embeds, table, set(), steps, Sampler(), on_logits=logits.append).tokens
        except RuntimeFailure as e:
            if not all(np.isfinite(x.astype(np.float32)).all() for x in logits):
                raise LLMExportError("the decoder returns NaN or infinite logits in ONNX Runtime") from e
            raise LLMExportError(f"the decoder does not run in ONNX Runtime: {e}") from e
        if not all(np.isfinite(x.astype(np.float32)).all() for x in logits):
            raise LLMExportError("the decoder returns NaN or infinite logits in ONNX Runtime")
        want, want_logits = _torch_greedy(lm, embeds, table, steps)
        worst = max(worst, float(np.abs(logits[0].astype(np.float32) - want_logits).max()))
        first += int(got[0] == want[0])
        same += sum(int(a == b) for a, b in zip(got, want))
        total += steps
    report = {
        "prompts": len(prompts),
        "first_token_agreement": first / len(prompts),
        "greedy_token_agreement": same / total,
        "max_first_logit_abs_diff": worst,
    }
    exact = llm["precision"] == "fp32" and llm["target"] == "cpu"
    if exact and worst > 1e-3 * (1 + float(np.abs(want_logits).max())):
        raise LLMExportError(f"the fp32 decoder's logits differ from PyTorch's by up to {worst:.3g}")
    return report


def _torch_greedy(lm, embeds: np.ndarray, table: np.ndarray, steps: int) -> tuple[list[int], np.ndarray]:
    """PyTorch's greedy tokens from the same embeddings (the next inputs from the same table), and the first
    step's logits (V,)."""
    import torch

    dtype = lm.lm_head.weight.dtype
    x = torch.from_numpy(np.array(embeds))[None].to(dtype)  # (1, L, D)
    past, tokens, first = None, [], None
    with torch.no_grad():
        for _ in range(steps):
            out = lm(inputs_embeds=x, past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[0, -1].float()  # (V,)
            first = logits.numpy() if first is None else first
            tokens.append(int(logits.argmax()))
            x = torch.from_numpy(np.array(table[tokens[-1]], dtype=np.float32))[None, None].to(dtype)  # (1, 1, D)
    return tokens, first


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
