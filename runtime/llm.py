"""Generation with the bundle's decoder: an ONNX Runtime session over onnxruntime-genai's `inputs_embeds` model.

onnxruntime-genai's own Generator cannot drive a decoder built with `exclude_embeds` ("Model input was not found:
input_ids"), so this is a small loop over the session: one prefill over the whole prompt (text embeddings and the
kept visual tokens), then one step per token with the KV cache fed back. Greedy, or temperature / top-p sampling
with a seed; stops on EOS or after max_new_tokens; every token can be streamed through a callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import PromptError


@dataclass
class Generation:
    tokens: list[int]
    prefill_ms: float
    first_token_at: float  # time.perf_counter() when the first token was chosen
    decode_ms: float  # the steps after the first token
    stopped: str  # "eos" or "length"


class Sampler:
    """Greedy when temperature == 0; otherwise softmax(logits / temperature) restricted to the top-p nucleus."""

    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature, self.top_p = temperature, top_p
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self.temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / self.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        if self.top_p < 1:
            order = np.argsort(-p, kind="stable")
            keep = np.cumsum(p[order]) - p[order] < self.top_p  # the smallest prefix whose mass reaches top_p
            mask = np.zeros_like(p, dtype=bool)
            mask[order[keep]] = True
            p = np.where(mask, p, 0.0)
            p /= p.sum()
        return int(self.rng.choice(p.shape[0], p=p))


class Decoder:
    """The int4 (or fp32) decoder with its KV cache."""

    def __init__(self, root: Path, llm: dict, providers: list[str]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(root / llm["dir"] / llm["file"]), options, providers=providers)
        self.layers = llm["num_layers"]
        self.kv_heads = llm["num_kv_heads"]
        self.head_size = llm["head_size"]
        self.max_length = llm["max_length"]
        names = llm["inputs"]
        self.past_key, self.past_value = names["past_key_names"], names["past_value_names"]
        outs = llm["outputs"]
        self.present_key, self.present_value = outs["present_key_names"], outs["present_value_names"]
        self.output_names = [outs["logits"]] + [
            name % i for i in range(self.layers) for name in (self.present_key, self.present_value)
        ]
        types = {i.name: i.type for i in self.session.get_inputs()}
        self.kv_dtype = np.float16 if "float16" in types[self.past_key % 0] else np.float32

    def _device(self) -> str:
        gpu = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        return "cuda" if self.session.get_providers()[0] in gpu else "cpu"

    def generate(
        self,
        embeds: np.ndarray,
        embed_table: np.ndarray,
        eos_ids: set[int],
        max_new_tokens: int,
        sampler: Sampler,
        on_token: Callable[[int], None] | None = None,
    ) -> Generation:
        """embeds (L, D) float32: the whole prompt. Returns the new token ids (EOS excluded).

        IOBinding: the KV cache the session returns is bound back as the next step's input where it lies (on the
        GPU with CUDA), never copied through numpy; only the logits come to the host.
        """
        import onnxruntime as ort

        length = embeds.shape[0]
        if length + max_new_tokens > self.max_length:
            raise PromptError(
                f"prompt ({length} tokens with the image) + max_new_tokens ({max_new_tokens}) exceeds the LLM's "
                f"context of {self.max_length} tokens"
            )
        device = self._device()
        start = time.perf_counter()
        binding = self.session.io_binding()
        empty = np.zeros((1, self.kv_heads, 0, self.head_size), self.kv_dtype)
        past = {
            name % i: ort.OrtValue.ortvalue_from_numpy(empty, device, 0)
            for i in range(self.layers)
            for name in (self.past_key, self.past_value)
        }
        mask = np.ones((1, length + max_new_tokens), dtype=np.int64)  # one buffer, sliced per step
        step_embeds = embeds[None].astype(np.float32, copy=False)  # (1, L, D) for the prefill
        tokens: list[int] = []
        stopped = "length"
        prefill_done = first_token_at = None
        for step in range(max_new_tokens):
            binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(step_embeds))
            binding.bind_cpu_input("attention_mask", mask[:, : length + len(tokens)])
            for name, value in past.items():
                binding.bind_ortvalue_input(name, value)
            binding.bind_output(self.output_names[0], "cpu")
            for name in self.output_names[1:]:
                binding.bind_output(name, device)
            self.session.run_with_iobinding(binding)
            outputs = binding.get_outputs()
            logits = outputs[0].numpy()[0, -1]  # (V,) the last position
            if step == 0:
                prefill_done = time.perf_counter()
            token = sampler(logits)
            if step == 0:
                first_token_at = time.perf_counter()
            if token in eos_ids:
                stopped = "eos"
                break
            tokens.append(token)
            if on_token is not None:
                on_token(token)
            for i in range(self.layers):  # present -> past, as OrtValues
                past[self.past_key % i] = outputs[1 + 2 * i]
                past[self.past_value % i] = outputs[2 + 2 * i]
            step_embeds = embed_table[token][None, None].astype(np.float32)  # (1, 1, D)
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()
        end = time.perf_counter()
        return Generation(
            tokens=tokens,
            prefill_ms=(prefill_done - start) * 1000,
            first_token_at=first_token_at,
            decode_ms=(end - first_token_at) * 1000,
            stopped=stopped,
        )
