"""`Pipeline.load(bundle).run(image, prompt)`: the torch-free path from a camera image to an answer.

    image ─preprocess (PIL, uint8)─► pixels, grid
    prompt ─template─► tokenizer ─► [pre | <image> | post] ids ─embed.npy─► text embeddings
    vision engine (ONNX Runtime, or the TensorRT plan): pixels, post embeddings, grid ─► kept tokens (keep, D)
    decoder: [pre embeds | kept tokens | post embeds] ─► prefill ─► decode loop (KV cache on the device) ─► text

Loading validates the manifest (format version, keep, files and hashes, TensorRT plan vs this machine), picks the
execution providers that really work here (see `providers`), warns in one line when the bundle was built for
another target, and creates the sessions on first use, or at once with a warm-up (`warmup`: on by default where a
session runs on a GPU, where the first call pays for kernel selection and allocations). Every dtype is read from
the sessions: text embeddings and kept tokens are cast to what each session takes.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from adafv.answer import Answer

from . import manifest as bundle_format
from .contract import OUTPUTS, VisionContract
from .errors import BundleError, EngineError, ImageError, OptionError, PromptError, first_line
from .llm import Decoder, Sampler, session_dtype
from .placement import BACKENDS, Placement, decide, with_trt_options
from .preprocess import PreparedImage, prepare, preprocess
from .providers import GPU_PROVIDERS

ENGINES = BACKENDS
WARMUP_PROMPT = "What is in the picture?"


class TargetWarning(UserWarning):
    """A bundle runs on an execution provider it was not built for (it works, but not at its best)."""


class Pipeline:
    """A loaded bundle. Use `Pipeline.load(path)`."""

    def __init__(self, root: Path, manifest: dict[str, Any], providers: list[str], engine: str):
        self.root = root
        self.manifest = manifest
        self.providers = providers
        self.engine = engine
        self.warmup_ms: float | None = None
        self.placement: Placement | None = None
        self._vision = None
        self._decoder = None
        self._tokenizer = None
        self._embed = None
        self._newline = None
        self._files: dict | None = None

    @classmethod
    def load(
        cls,
        bundle: str | Path,
        providers: list[str] | None = None,
        keep: int | None = None,
        engine: str = "auto",
        verify: bool = True,
        warmup: bool | None = None,
    ) -> Pipeline:
        """Validate a bundle. `keep`: fail unless the bundle was built for it. `engine`: `tensorrt` requires the
        bundle's plan to match this machine's TensorRT and GPU; `auto` uses it when it does, else ONNX Runtime.
        `verify=False` skips the sha256 of every file (sizes are always checked). `providers`: default, those that
        really work here (TensorRT, CUDA, CPU). `warmup`: run the vision graph (every crop count) and a prefill
        once now, so the first question costs what every later one does; None = where a session runs on a GPU."""
        if not isinstance(bundle, (str, Path)):
            raise BundleError(f"a bundle is a folder path, got {type(bundle).__name__}")
        root = Path(bundle)
        m = bundle_format.read_manifest(root)
        check_requirements(root, m)
        built_keep = m["selection"]["keep"]
        if keep is not None and keep != built_keep:
            raise BundleError(f"{root} was built for keep={built_keep}, not keep={keep}: build one with that keep")
        bundle_format.verify_files(root, m, hashes=verify)
        files = bundle_format.snapshot(root, m)  # what was verified: a file changed later is refused, not used
        placement = decide(root, m, providers, engine)
        pipe = cls(root, m, placement.vision_providers, placement.backend)
        pipe.placement = placement
        pipe._files = files
        if placement.warning:
            warnings.warn(placement.warning, TargetWarning, stacklevel=2)
        if warmup or (warmup is None and pipe.providers[0] in GPU_PROVIDERS):
            pipe.warmup()
        return pipe

    def warmup(self) -> float:
        """Create the sessions and run each stage once (the vision graph at every crop count the vision graph takes, a
        prefill as long as a real question's, one decode step); returns and records its time in ms."""
        from PIL import Image

        start = time.perf_counter()
        spec = self.manifest["preprocess"]
        shapes = spec["image_grid_pinpoints"] if spec["kind"] == "anyres" else [(1, 1)]
        if spec["kind"] == "qwen2vl":  # a fixed-resolution bundle: an image of its own size
            shapes = [(spec["resolution"]["height"] // 2, spec["resolution"]["width"] // 2)]
        lo, hi = self.manifest["vision"]["crops"]
        pre, post = self.prompt_ids(WARMUP_PROMPT)
        seen: set[int] = set()
        kept, positions = np.zeros((0, self.manifest["vision"]["hidden_size"]), np.float32), np.zeros(0, np.int64)
        for h, w in shapes:  # one image per crop count: on a GPU, kernels are chosen per input shape
            image = Image.new("RGB", (max(w, 1) * 2, max(h, 1) * 2), (128, 128, 128))
            pixels, grid = preprocess(image, spec)
            if pixels.shape[0] in seen or not lo <= pixels.shape[0] <= hi:
                continue
            seen.add(pixels.shape[0])
            kept, positions = self.vision(pixels, self.embed(post), grid)
        embeds = np.concatenate([self.embed(pre), kept[positions >= 0], self.embed(post)])
        self._load_decoder().generate(embeds, self.embed_table, set(), 2, Sampler())
        self.warmup_ms = round((time.perf_counter() - start) * 1000, 3)
        return self.warmup_ms

    def check_unchanged(self) -> None:
        """The bundle's files are those verified at load (the parts open lazily): a file replaced or rewritten since
        is a BundleError, never a silently different answer. One stat per file."""
        if self._files is not None:
            changed = bundle_format.changed_since(self.root, self._files)
            if changed is not None:
                raise BundleError(f"{self.root}: {changed} changed since the bundle was loaded and verified: load it "
                                  "again")  # fmt: skip

    # -- properties from the manifest -----------------------------------------------------------------------------

    @property
    def keep(self) -> int:
        return self.manifest["selection"]["keep"]

    @property
    def contract(self) -> VisionContract:
        """The vision graph's I/O contract (adafv.runtime.contract)."""
        return VisionContract.from_manifest(self.manifest)

    @property
    def max_text(self) -> int:
        return self.manifest["vision"]["max_text"]

    # -- lazily loaded parts --------------------------------------------------------------------------------------

    def _load_vision(self):
        if self._vision is None:
            if self.engine == "tensorrt":
                from .trt import PlanRunner

                self._vision = PlanRunner(self.placement.plan)
            else:
                self._vision = _OrtVision(self.root, self.manifest, self.providers, self.placement.vision_file)
        return self._vision

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            path = self.root / self.manifest["tokenizer"]["dir"] / "tokenizer.json"
            try:
                self._tokenizer = Tokenizer.from_file(str(path))
            except Exception as e:
                raise BundleError(f"{path} cannot be read: {e}") from e
        return self._tokenizer

    @property
    def embed_table(self) -> np.ndarray:
        if self._embed is None:
            path = self.root / self.manifest["embed"]["file"]
            try:
                self._embed = np.load(path, mmap_mode="r")  # a 7B table stays on disk until rows are read
            except (ValueError, OSError) as e:
                raise BundleError(f"{path} cannot be read: {e}") from e
        return self._embed

    def _load_decoder(self) -> Decoder:
        if self._decoder is None:
            self._decoder = Decoder(self.root, self.manifest["llm"], self.placement.decoder_providers)
        return self._decoder

    @property
    def decoder(self) -> Decoder:
        """The bundle's decoder (its session created on first use): `generate` over any prompt embeddings."""
        return self._load_decoder()

    @property
    def session_providers(self) -> dict[str, str]:
        """The provider each session really runs on (creates the sessions)."""
        vision = "TensorRT (plan)" if self.engine == "tensorrt" else self._load_vision().session.get_providers()[0]
        return {"vision": vision, "decoder": self._load_decoder().provider}

    # -- stages ---------------------------------------------------------------------------------------------------

    def prompt_ids(self, prompt: str) -> tuple[list[int], list[int]]:
        """(ids before the image, ids after it) for one question, through the bundle's chat template."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError("the prompt is empty: ask a question about the image")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: from JSON's \ud800, or argv bytes that are not UTF-8
            raise PromptError(f"the prompt is not valid text: character {e.start} is a lone surrogate "
                              f"({prompt[e.start]!r}); is it UTF-8?") from None  # fmt: skip
        p = self.manifest["prompt"]
        ids = self.tokenizer.encode(p["before"] + prompt + p["after"], add_special_tokens=True).ids
        where = [i for i, t in enumerate(ids) if t == p["image_token_id"]]
        if len(where) != 1:
            raise PromptError(f"the prompt must not contain the image placeholder {p['image_token']!r} itself")
        pre, post = ids[: where[0]], ids[where[0] + 1 :]
        if len(post) > self.max_text:
            raise PromptError(
                f"the prompt is too long: {len(post)} tokens after the image, this engine takes at most "
                f"{self.max_text} (rebuild with a larger --max-text)"
            )
        return pre, post

    def layout(self, positions: np.ndarray, tokens: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        """The kept tokens as the LLM reads them: in reading order (as the graph returns them), and with the rows
        layout, the model's image_newline after every high-resolution grid row that keeps a token."""
        if self.manifest["layout"]["kind"] != "rows":
            return tokens
        if self._newline is None:
            self._newline = np.load(self.root / self.manifest["layout"]["newline"])  # (D,)
        side = int(round(self.manifest["vision"]["patches_per_crop"] ** 0.5))
        return rows_layout(positions, tokens, self._newline, side, grid[1])

    def llm_positions(self, n_pre: int, kept: np.ndarray, n_post: int) -> np.ndarray | None:
        """The prompt's M-RoPE positions (3, L) for a Qwen bundle (adafv.positions: each kept token at its cell of
        the merged grid, the text after the image where the whole image would end it); None for 1-D LLMs."""
        if self.manifest["llm"].get("positions") != "mrope":
            return None
        from adafv.positions import cells, mrope

        grid = self.manifest["vision"]["merged_grid"]
        return mrope(n_pre, cells(kept, grid[1]), grid, n_post)

    def prepare(self, image) -> PreparedImage:
        """Decode-side work done ahead of `run`: the crops the vision graph takes, and nothing of the full image."""
        _check_image(image)
        return prepare(image, self.manifest["preprocess"])

    def embed(self, ids: list[int]) -> np.ndarray:
        """Rows of the embedding table, in its dtype: (T, D)."""
        return np.asarray(self.embed_table[ids])

    def vision(self, pixels: np.ndarray, text_embeds: np.ndarray, grid: tuple[int, int]):
        """uint8 pixels (N, 3, S, S) -> kept tokens (keep, D) in reading order and their crop-major positions
        (keep,), -1 for padding."""
        m = self.manifest["vision"]
        lo, hi = m["crops"]
        if not lo <= pixels.shape[0] <= hi:
            raise BundleError(
                f"the image gives {pixels.shape[0]} crops; this engine takes {lo}..{hi} (see --max-crops)"
            )
        vision = self._load_vision()
        return vision.run(self.vision_feeds(pixels, text_embeds, grid, vision.dtypes["text_embeds"]))

    def vision_feeds(self, pixels: np.ndarray, text_embeds: np.ndarray, grid: tuple[int, int], dtype=np.float32):
        """The vision graph's inputs by name: uint8 pixels (N, 3, S, S), text embeddings (T, D) in `dtype`, and for
        anyres graphs the crop grid (2,) int64."""
        return self.contract.feeds(pixels, text_embeds, grid, dtype)

    def run(
        self,
        image,
        prompt: str,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        on_token: Callable[[str], None] | None = None,
        stop: str | list[str] | None = None,
    ) -> dict[str, Any]:
        """Answer a question about an RGB PIL image (see `adafv.runtime.load_image`), or an image `prepare`d
        before. `on_token` receives the text of each new token as it is generated. `stop`: up to 4 strings; the
        answer ends before the first of them that appears (never sent to `on_token`), `stopped` = "stop". Returns
        the same JSON-ready schema as the reference path."""
        if not isinstance(image, PreparedImage):
            _check_image(image)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise OptionError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        stops = check_stop(stop)
        sampler = Sampler(temperature, top_p, seed)
        self.check_unchanged()
        t0 = time.perf_counter()
        pre, post = self.prompt_ids(prompt)
        if isinstance(image, PreparedImage):
            pixels, grid = image.pixels, image.grid
        else:
            pixels, grid = preprocess(image, self.manifest["preprocess"])  # uint8 (N, 3, S, S)
        t1 = time.perf_counter()
        kept_tokens, positions = self.vision(pixels, self.embed(post), grid)  # (keep, D), (keep,)
        valid = positions >= 0  # paper mode pads with -1
        t2 = time.perf_counter()
        visual = self.layout(positions[valid], kept_tokens[valid], grid)  # (K [+ rows], D)
        embeds = np.concatenate([self.embed(pre), visual, self.embed(post)])  # (L, D)
        tok = self.manifest["tokenizer"]
        stream = _Detokenizer(self.tokenizer, on_token, stops) if on_token is not None or stops else None
        decoder = self._load_decoder()
        llm_positions = self.llm_positions(len(pre), positions[valid], len(post))
        generation = decoder.generate(embeds, self.embed_table, set(tok["eos_token_ids"]), max_new_tokens, sampler,
                                      stream, positions=llm_positions)  # fmt: skip
        if stream is not None:
            stream.flush()
        text = stream.text if stream is not None else self.tokenizer.decode(generation.tokens, skip_special_tokens=True)
        t3 = time.perf_counter()
        ms = lambda a, b: round((b - a) * 1000, 3)  # noqa: E731
        decoded = max(len(generation.tokens) - 1, 0)
        num_crops = pixels.shape[0]
        return Answer(
            model=self.manifest["model"]["name"],
            path="bundle",
            method=self.manifest["selection"]["method"],
            mode=self.manifest["selection"]["mode"],
            layout=self.manifest["layout"]["kind"],
            keep=self.keep,
            text=text.strip(),
            tokens=generation.tokens,
            kept_positions=sorted(positions[valid].tolist()),
            num_visual_tokens=num_crops * self.manifest["vision"]["patches_per_crop"],
            num_llm_visual_tokens=int(visual.shape[0]),
            num_crops=num_crops,
            grid=list(grid),
            merged_grid=self.manifest["vision"].get("merged_grid"),
            facts={
                "bundle": str(self.root),
                "engine": self.engine,
                "target": self.manifest["target"],
                "providers": self.session_providers,
                "stopped": generation.stopped,
                "prompt_tokens": int(embeds.shape[0]),
                "warmup_ms": self.warmup_ms,
                "host_bytes_per_decode_step": generation.host_bytes_per_step,
                "kv_cache_bytes": generation.kv_cache_bytes,
            },
            timings_ms={
                "preprocess": ms(t0, t1) + (image.preprocess_ms if isinstance(image, PreparedImage) else 0.0),
                "vision": ms(t1, t2),
                "prefill": round(generation.prefill_ms, 3),
                "time_to_first_token": ms(t0, generation.first_token_at),
                "decode": round(generation.decode_ms, 3),
                "decode_tokens_per_s": round(decoded / (generation.decode_ms / 1000), 2) if decoded else None,
                "total": ms(t0, t3),
            },
        ).to_dict()


def rows_layout(positions: np.ndarray, tokens: np.ndarray, newline: np.ndarray, side: int, cols: int) -> np.ndarray:
    """positions (K,) crop-major in reading order, tokens (K, D) -> (K + rows kept, D): `newline` after each row of
    the stitched high-resolution grid that keeps a token (the base view, crop 0, has none). The same rule as
    `adafv.vision.rows_layout`, in numpy."""
    P = side * side
    crop, patch = positions // P, positions % P
    row = np.where(crop == 0, -1, ((crop - 1) // cols) * side + patch // side)  # (K,) global grid row, -1 = base
    last = (row >= 0) & (np.append(row[1:], -2) != row)  # (K,) the last kept token of its row
    after = np.flatnonzero(last) + 1  # insert the newline after these
    return np.insert(tokens, after, newline.astype(tokens.dtype, copy=False), axis=0)


def version_tuple(version: str) -> tuple[int, ...]:
    """'1.24.4' -> (1, 24, 4); a local or pre-release suffix is ignored ('1.23.0+jetson' -> (1, 23, 0))."""
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit()) if piece else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_requirements(root: Path, manifest: dict[str, Any]) -> None:
    """This environment's ONNX Runtime must be one the bundle's graphs run on (an older one may reject an op, or
    crash in it: onnxruntime 1.23 segfaults in a decoder built by onnxruntime-genai 0.18): a one-line BundleError
    naming both versions."""
    from .providers import ort

    module = ort()  # one line when it is missing, or when both the CPU and GPU packages are installed
    need = manifest["requires"]["onnxruntime"]
    if version_tuple(module.__version__) < version_tuple(need):
        raise BundleError(
            f"{root} needs ONNX Runtime >= {need} (for the operators of its graphs); this environment has "
            f"{module.__version__}: upgrade it (adafv[cpu] or adafv[gpu] install a recent one; on a Jetson, "
            "NVIDIA's build for your JetPack)"
        )


MAX_STOPS = 4  # as OpenAI's API


def check_stop(stop) -> list[str]:
    """None, a string or a list of up to 4 non-empty strings -> the list; anything else is an OptionError."""
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
        raise OptionError("stop must be a non-empty string or a list of non-empty strings")
    if len(stops) > MAX_STOPS:
        raise OptionError(f"stop takes at most {MAX_STOPS} sequences, got {len(stops)}")
    if any(len(s) > 256 for s in stops):
        raise OptionError("a stop sequence is at most 256 characters")
    return list(stops)


def _check_image(image) -> None:
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise ImageError(
            f"the image must be a PIL.Image (decode a file with adafv.runtime.load_image), got {type(image).__name__}"
        )
    if image.width < 1 or image.height < 1:
        raise ImageError(f"the image has no pixels ({image.width}x{image.height})")
    try:
        image.load()
    except (ValueError, OSError) as e:  # a closed image, a file gone since it was opened
        raise ImageError(f"the image cannot be read: {e}") from e


class _OrtVision:
    def __init__(self, root: Path, manifest: dict[str, Any], providers: list[str], name: str):
        import onnxruntime as ort

        path = root / name
        try:
            self.session = ort.InferenceSession(str(path), providers=with_trt_options(providers, manifest))
        except Exception as e:  # ONNX Runtime refusing the graph (too old for its opset, a converter's defect)
            raise BundleError(f"ONNX Runtime {ort.__version__} cannot load {path}: {first_line(e)}") from e
        self.dtypes = {i.name: session_dtype(i) for i in self.session.get_inputs()}
        VisionContract.from_manifest(manifest).check_session(path, self.session)

    def run(self, feeds):
        try:
            tokens, positions = self.session.run(list(OUTPUTS), feeds)
        except Exception as e:
            raise EngineError(f"ONNX Runtime failed running the vision graph: {first_line(e)}") from e
        return tokens, positions


class _Detokenizer:
    """Turns token ids into text pieces as they come (byte-level BPE may need several tokens for one character),
    and ends the generation at a stop sequence: text that could still become the start of one is held back, so no
    piece of a stop sequence is ever sent. `text` is the answer so far (up to the stop)."""

    def __init__(self, tokenizer, on_text: Callable[[str], None] | None, stops: list[str] = ()):
        self.tokenizer, self.on_text, self.stops = tokenizer, on_text, list(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1  # characters that may begin a stop
        self.ids: list[int] = []
        self.sent = ""
        self.text = ""
        self.stopped = False

    def __call__(self, token: int) -> bool:
        """True: a stop sequence appeared (the generation ends)."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return False
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self.text = True, text[:cut]
            self._send(self.text)
            return True
        self.text = text
        self._send(text[: len(text) - self.hold] if self.hold else text)
        return False

    def flush(self) -> None:
        """At the end: send what is left, even a character the last token left incomplete."""
        if not self.stopped:
            self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            self._send(self.text)

    def _send(self, text: str) -> None:
        if len(text) <= len(self.sent):
            return
        piece, self.sent = text[len(self.sent) :], text
        if self.on_text is not None:
            self.on_text(piece)
