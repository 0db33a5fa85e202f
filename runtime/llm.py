"""Generation with the bundle's decoder: an ONNX Runtime session over onnxruntime-genai's `inputs_embeds` model.

onnxruntime-genai's own Generator cannot drive a decoder built with `exclude_embeds` ("Model input was not found:
input_ids"), so this is a small loop over the session: one prefill over the whole prompt (text embeddings and the
kept visual tokens), then one step per token. Greedy, or temperature / top-p sampling with a seed; stops on EOS or
after max_new_tokens; every token can be streamed through a callback.

The loop follows the session, not assumptions: the dtypes of `inputs_embeds`, the KV cache and `logits` are read from
the session (a decoder built for CUDA takes float16). Everything that can stay on the session's device does:

* the KV cache is one buffer per layer and kind, `(1, kv_heads, prompt + max_new_tokens, head_size)`, allocated on
  the device once per answer and bound as both `past_key_values.*` and `present.*` (GroupQueryAttention's shared
  buffer mode: each step writes its new row in place; nothing is reallocated or copied);
* the attention mask is a device buffer of ones, bound as a prefix view of the current length (no upload per step);
* the prompt's embeddings go to the device once, for the prefill;
* per step, only the new token's embedding row goes in and the last position's logits come out (the decoder is
  built with `prune_lm_head`, so even the prefill returns one position). Those bytes are counted
  (`Generation.host_bytes_per_step`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError, EngineError, OptionError, PromptError, first_line

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
           "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}  # fmt: skip


def session_dtype(arg) -> np.dtype:
    """numpy dtype of an ONNX Runtime NodeArg (input or output)."""
    if arg.type not in _DTYPES:
        raise BundleError(f"the graph's {arg.name} is {arg.type}, which adafv does not feed")
    return np.dtype(_DTYPES[arg.type])


@dataclass
class Generation:
    tokens: list[int]
    prefill_ms: float
    first_token_at: float  # time.perf_counter() when the first token was chosen
    decode_ms: float  # the steps after the first token
    stopped: str  # "eos" or "length"
    host_bytes_prefill: int = 0  # bytes handed to / taken from the session for the prefill
    host_bytes_per_step: int = 0  # the same, per decode step: one embedding row in, one row of logits out
    kv_cache_bytes: int = 0


class Sampler:
    """Greedy when temperature == 0; otherwise softmax(logits / temperature) restricted to the top-p nucleus."""

    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None):
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < 1e6:
            raise OptionError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise OptionError(f"top_p must be a number in (0, 1], got {top_p!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise OptionError(f"seed must be a non-negative integer, got {seed!r}")
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> int:
        if not np.isfinite(logits).all():
            raise EngineError("the decoder produced non-finite logits (NaN or inf): the bundle's LLM is broken")
        if self.temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64)
        with np.errstate(over="ignore", under="ignore", divide="ignore"):
            z = (z - z.max()) / self.temperature  # <= 0 and never NaN: a tiny temperature tends to greedy
        p = np.exp(z)
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
    """The bundle's decoder (int4 or fp32 weights; float32 or float16 activations) with its KV cache."""

    def __init__(self, root: Path, llm: dict, providers: list):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = root / llm["dir"] / llm["file"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # ONNX Runtime refusing the graph: too old, or an op it lacks
            raise BundleError(f"ONNX Runtime {ort.__version__} cannot load {path}: {first_line(e)}") from e
        self.layers = llm["num_layers"]
        self.kv_heads = llm["num_kv_heads"]
        self.head_size = llm["head_size"]
        self.max_length = llm["max_length"]
        names = llm["inputs"]
        self.past_key, self.past_value = names["past_key_names"], names["past_value_names"]
        outs = llm["outputs"]
        self.logits_name = outs["logits"]
        self.present_key, self.present_value = outs["present_key_names"], outs["present_value_names"]
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.embeds_dtype = session_dtype(inputs["inputs_embeds"])
        self.mask_dtype = session_dtype(inputs["attention_mask"])
        self.kv_dtype = session_dtype(inputs[self.past_key % 0])
        self.logits_dtype = session_dtype(outputs[self.logits_name])
        self.positions = "position_ids" in inputs  # a 3-D (M-RoPE) decoder: the caller gives every position
        self.provider = self.session.get_providers()[0]
        self.device = "cuda" if self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"

    def generate(
        self,
        embeds: np.ndarray,
        embed_table: np.ndarray,
        eos_ids: set[int],
        max_new_tokens: int,
        sampler: Sampler,
        on_token: Callable[[int], bool | None] | None = None,
        on_logits: Callable[[np.ndarray], None] | None = None,
        positions: np.ndarray | None = None,
    ) -> Generation:
        """embeds (L, D), any float dtype: the whole prompt. Returns the new token ids (EOS excluded). `on_token`
        sees each new token; returning True ends the generation there (a stop sequence: `stopped` = "stop").
        `on_logits` sees each step's logits (V,) before sampling (the build's check of the decoder uses it).
        `positions` (3, L) int64: the prompt's M-RoPE positions (adafv.positions), required by a 3-D decoder; each
        generated token then takes the next position on all three rows."""
        import onnxruntime as ort

        length = embeds.shape[0]
        if self.positions:
            if positions is None:
                from adafv.positions import mrope

                positions = mrope(length, [], (0, 0), 0)  # text only: (p, p, p)
            positions = np.asarray(positions, dtype=np.int64)
            if positions.shape != (3, length):
                raise EngineError(f"the decoder needs (3, {length}) positions, got {positions.shape}")
            next_position = int(positions.max()) + 1 if length else 0
        if length + max_new_tokens > self.max_length:
            raise PromptError(
                f"prompt ({length} tokens with the image) + max_new_tokens ({max_new_tokens}) exceeds the LLM's "
                f"context of {self.max_length} tokens"
            )
        start = time.perf_counter()
        capacity = length + max_new_tokens
        device = self.device
        kv_shape = (1, self.kv_heads, capacity, self.head_size)
        cache = {
            name % i: ort.OrtValue.ortvalue_from_shape_and_type(kv_shape, self.kv_dtype.type, device, 0)
            for i in range(self.layers)
            for name in (self.past_key, self.past_value)
        }
        mask = ort.OrtValue.ortvalue_from_numpy(np.ones((1, capacity), self.mask_dtype), device, 0)
        prompt = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(embeds[None], self.embeds_dtype), device, 0)
        binding = self.session.io_binding()
        binding.bind_output(self.logits_name, "cpu")  # first: get_outputs() follows the binding order
        for i in range(self.layers):
            for past, present in ((self.past_key, self.present_key), (self.past_value, self.present_value)):
                binding.bind_ortvalue_input(past % i, cache[past % i])  # shared buffer: past and present are one
                binding.bind_ortvalue_output(present % i, cache[past % i])
        binding.bind_ortvalue_input("inputs_embeds", prompt)
        if self.positions:
            binding.bind_cpu_input("position_ids", np.ascontiguousarray(positions[:, None]))  # (3, 1, L)
        tokens: list[int] = []
        stopped = "length"
        prefill_done = first_token_at = None
        row_bytes = embeds.shape[1] * self.embeds_dtype.itemsize
        logits_bytes = 0
        for step in range(max_new_tokens):
            total = length + len(tokens)
            binding.bind_input("attention_mask", device, 0, self.mask_dtype.type, [1, total], mask.data_ptr())
            try:
                self.session.run_with_iobinding(binding)
            except Exception as e:
                raise EngineError(f"ONNX Runtime failed running the decoder: {first_line(e)}") from e
            logits = binding.get_outputs()[0].numpy()  # (1, 1, V): prune_lm_head leaves the last position only
            logits_bytes = logits.nbytes
            if step == 0:
                prefill_done = time.perf_counter()
            if on_logits is not None:
                on_logits(logits[0, -1].copy())  # a copy: ONNX Runtime reuses the output's memory next step
            token = sampler(logits[0, -1])
            if step == 0:
                first_token_at = time.perf_counter()
            if token in eos_ids:
                stopped = "eos"
                break
            tokens.append(token)
            if on_token is not None and on_token(token):
                stopped = "stop"
                break
            row = np.asarray(embed_table[token], dtype=self.embeds_dtype)[None, None]  # (1, 1, D)
            binding.bind_cpu_input("inputs_embeds", row)
            if self.positions:
                binding.bind_cpu_input("position_ids", np.full((3, 1, 1), next_position + len(tokens) - 1, np.int64))
        end = time.perf_counter()
        return Generation(
            tokens=tokens,
            prefill_ms=(prefill_done - start) * 1000,
            first_token_at=first_token_at,
            decode_ms=(end - first_token_at) * 1000,
            stopped=stopped,
            host_bytes_prefill=length * row_bytes + capacity * self.mask_dtype.itemsize + logits_bytes,
            host_bytes_per_step=row_bytes + logits_bytes,
            kv_cache_bytes=2 * self.layers * int(np.prod(kv_shape)) * self.kv_dtype.itemsize,
        )

