"""`adafv serve BUNDLE`: the runtime behind an OpenAI-compatible HTTP API, for a robot's software to call.

    POST /v1/chat/completions   one image + one question per request; `stream: true` answers as server-sent events
    GET  /v1/models             the bundle's model
    GET  /health                liveness, the queue
    GET  /metrics               Prometheus text: requests by status, queue depth, time to first token, tokens/s

Built on FastAPI (Starlette) served by uvicorn: the maintained ASGI stack with the most users, whose streaming and
disconnect handling we use directly. (LitServe wraps the same stack with batching and its own worker model; the
runtime answers one question at a time per device, so its extra layer bought nothing here.)

One model instance per process (one device), run by one worker thread. A request is admitted first (a place in a
bounded queue, running + waiting; a full queue answers 503 with Retry-After before the body is even read), then its
body is read (within a deadline) and checked, then its image is decoded and turned into the vision graph's crops by
one decoding thread, so at most one full-size image is decoded at any time and a queued request holds only its
crops (1.7 MB for LLaVA-NeXT's 5). A client that goes away, streaming or not, stops its generation at the next token
and frees its place; it is counted under status 499. Connections that never finish their headers are closed after
`HEADER_TIMEOUT` seconds, idle keep-alive connections after `KEEP_ALIVE` seconds.

Loopback by default; optional bearer API key on /v1/* (compared in constant time; /health and /metrics are open:
they carry no answers). Bounded: request body, image pixels (`--max-image-pixels`), the text after the image (the
engine's max_text), `max_tokens`, stop sequences. Every bad request is a 4xx with an OpenAI-style error body, and
no request ever puts a traceback in a body or the log: an unexpected failure is one 500 line (or, once a stream
has started, an error event followed by `[DONE]`).

The image is an `image_url` part with a base64 `data:` URL; a local file path (or `file://` URL) only with
`--allow-local-files DIR`, and only inside DIR. Of the messages, the last user message is the question (earlier
turns and system messages are not fed to the model: the bundle answers one question about one image). Request
fields: honoured `model`, `messages`, `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `seed`, `n`
(1), `stream` (a JSON boolean), `stream_options.include_usage`, `stop`; accepted and ignored, as they change no
answer: `user`, `metadata`, `store`, `service_tier`, `safety_identifier`, `prompt_cache_key`; refused with a 400
naming the field unless they hold their no-op value: `response_format` (text), `tools`, `tool_choice` (none),
`functions`, `function_call`, `logprobs` (false), `top_logprobs`, `frequency_penalty` and `presence_penalty` (0),
`logit_bias` ({}), `audio`, `modalities` (["text"]), `prediction`, `reasoning_effort`, `parallel_tool_calls`,
`web_search_options`, `verbosity`; any other field is refused as unknown (docs/serving.md).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request  # module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .backend import LocalBackend

MAX_BODY = 20 * 2**20  # bytes of a request (a 4K PNG as base64 is ~15 MB)
MAX_TOKENS = 512
MAX_IMAGE_PIXELS = 4096 * 4096  # per request: a 12 MP phone photo or a 4K frame fits; 48 MP needs the option
BODY_TIMEOUT = 30.0  # seconds to receive a whole request body
HEADER_TIMEOUT = 10  # seconds from a connection's start (or its last response) to a request's complete headers
KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open
CLIENT_GONE = 499  # the status a request is counted under when its client left before the answer

# request fields: those that change no answer (accepted, ignored), and those honoured only at their no-op value
IGNORED = ("user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key")
HONOURED = ("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "n", "stream",
            "stream_options", "stop")  # fmt: skip
NO_OP = {
    "response_format": lambda v: v is None or v == {"type": "text"},
    "tools": lambda v: v is None or v == [],
    "tool_choice": lambda v: v is None or v == "none",
    "functions": lambda v: v is None or v == [],
    "function_call": lambda v: v is None or v == "none",
    "parallel_tool_calls": lambda v: v is None or isinstance(v, bool),
    "logprobs": lambda v: v is None or v is False,
    "top_logprobs": lambda v: v is None or (v == 0 and not isinstance(v, bool)),
    "frequency_penalty": lambda v: v is None or (v == 0 and not isinstance(v, bool)),
    "presence_penalty": lambda v: v is None or (v == 0 and not isinstance(v, bool)),
    "logit_bias": lambda v: v is None or v == {},
    "audio": lambda v: v is None,
    "modalities": lambda v: v is None or v == ["text"],
    "prediction": lambda v: v is None,
    "reasoning_effort": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    "verbosity": lambda v: v is None,
}


class ApiError(Exception):
    """A request error answered with its HTTP status and an OpenAI-style body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def internal(error: BaseException) -> ApiError:
    """An unexpected failure (a bug): one line in the log and a 500 naming its type, never a traceback."""
    print(f"adafv serve: internal error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
          file=sys.stderr, flush=True)  # fmt: skip
    return ApiError(500, f"internal error: {type(error).__name__}", kind="server_error")


class Metrics:
    """Counters for /metrics (Prometheus text exposition format)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[int, int] = {}
        self.ttft_sum = 0.0
        self.ttft_count = 0
        self.tokens = 0
        self.decode_seconds = 0.0

    def count(self, status: int) -> None:
        with self.lock:
            self.requests[status] = self.requests.get(status, 0) + 1

    def answered(self, result: dict) -> None:
        t = result["timings_ms"]
        with self.lock:
            self.ttft_sum += t["time_to_first_token"] / 1000
            self.ttft_count += 1
            self.tokens += len(result["tokens"])
            self.decode_seconds += t["decode"] / 1000

    def text(self, queue_depth: int) -> str:
        with self.lock:
            lines = ["# HELP adafv_requests_total Requests answered, by HTTP status (499: the client left first).",
                     "# TYPE adafv_requests_total counter"]  # fmt: skip
            lines += [f'adafv_requests_total{{status="{s}"}} {n}' for s, n in sorted(self.requests.items())]
            lines += [
                "# HELP adafv_queue_depth Requests admitted and not finished (running or waiting).",
                "# TYPE adafv_queue_depth gauge",
                f"adafv_queue_depth {queue_depth}",
                "# HELP adafv_time_to_first_token_seconds Time to the first token, from the image to the first token.",
                "# TYPE adafv_time_to_first_token_seconds summary",
                f"adafv_time_to_first_token_seconds_sum {self.ttft_sum:.6f}",
                f"adafv_time_to_first_token_seconds_count {self.ttft_count}",
                "# HELP adafv_generated_tokens_total Tokens generated.",
                "# TYPE adafv_generated_tokens_total counter",
                f"adafv_generated_tokens_total {self.tokens}",
                "# HELP adafv_decode_tokens_per_second Generated tokens per second of decoding, since the start.",
                "# TYPE adafv_decode_tokens_per_second gauge",
                f"adafv_decode_tokens_per_second {self.tokens / self.decode_seconds if self.decode_seconds else 0:.3f}",
            ]
        return "\n".join(lines) + "\n"


class Admission:
    """A request's place in the queue, released exactly once however the request ends."""

    def __init__(self, server: Server):
        self.server, self.released = server, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.server.release()


class Server:
    """The state behind the app: the model backend (a Pipeline here, or replicas elsewhere: adafv.serve.cluster), a
    bounded queue, the decoding thread, the metrics. `preprocess_spec`: the bundle's preprocessing, so the image is
    decoded and prepared on admission (default: the backend's own; without one the decoded image is passed on)."""

    def __init__(self, backend, model: str, api_key: str | None = None, max_queue: int = 8,
                 max_tokens: int = MAX_TOKENS, local_files: Path | None = None,
                 max_image_pixels: int = MAX_IMAGE_PIXELS, preprocess_spec: dict | None = None):  # fmt: skip
        from .keys import check_api_key

        self.backend = backend if hasattr(backend, "stream") else LocalBackend(backend)  # a Pipeline: run it here
        self.model, self.api_key = model, check_api_key(api_key, "api_key")
        self.max_queue, self.max_tokens = max_queue, max_tokens
        self.max_image_pixels = max_image_pixels
        self.local_files = local_files.resolve() if local_files else None
        self.spec = preprocess_spec if preprocess_spec is not None else getattr(self.backend, "preprocess_spec", None)
        self.decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adafv-decode")  # one full image at once
        self.admitted = 0
        self.lock = threading.Lock()
        self.metrics = Metrics()

    # -- admission ---------------------------------------------------------------------------------------------------

    def admit(self) -> Admission:
        with self.lock:
            if self.admitted >= self.max_queue:
                raise ApiError(503, f"the server is busy: {self.admitted} requests queued (limit {self.max_queue}); "
                                    "retry shortly", kind="server_busy", headers={"Retry-After": "1"})  # fmt: skip
            self.admitted += 1
        return Admission(self)

    def release(self) -> None:
        with self.lock:
            self.admitted -= 1

    def check_key(self, authorization: str | None) -> None:
        from .keys import key_matches

        if self.api_key is not None and not key_matches(self.api_key, authorization):
            raise ApiError(401, "invalid or missing API key (Authorization: Bearer ...)", kind="authentication_error")

    # -- the request ---------------------------------------------------------------------------------------------------

    def parse(self, body: dict) -> dict[str, Any]:
        """The image source, the question and the generation options of a chat-completions request, checked. The
        image is not decoded here (`prepare` does that, after admission)."""
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        for key, value in body.items():
            if key in HONOURED or key in IGNORED:
                continue
            if key in NO_OP:
                if not NO_OP[key](value):
                    raise ApiError(400, f"{key} is not supported by this server (it answers plain text about one "
                                        "image)", param=key, code="unsupported_parameter")  # fmt: skip
                continue
            raise ApiError(400, f"unknown request field {key!r}", param=key, code="unknown_parameter")
        model = body.get("model")
        if model is not None and model != self.model:
            raise ApiError(404, f"model {str(model)!r:.80} is not served here; this server serves {self.model!r}",
                           param="model", code="model_not_found")  # fmt: skip
        messages = body.get("messages")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"] if isinstance(
            messages, list) else []  # fmt: skip
        if not users:
            raise ApiError(400, "messages must hold at least one user message", param="messages")
        content = users[-1].get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise ApiError(400, "a message's content is a string or a list of parts", param="messages")
        texts = [p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
        images = [p for p in parts if isinstance(p, dict) and p.get("type") == "image_url"]
        if len(images) != 1:
            raise ApiError(400, f"the last user message must hold exactly one image_url part, got {len(images)}",
                           param="messages")  # fmt: skip
        question = " ".join(t for t in texts if isinstance(t, str)).strip()
        if not question:
            raise ApiError(400, "the last user message holds no question text", param="messages")
        try:
            question.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "the question is not valid text (a lone UTF-16 surrogate such as \\ud800)",
                           param="messages") from None  # fmt: skip
        url = images[0].get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        source = self.image_source(url)
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 64))
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= self.max_tokens:
            raise ApiError(400, f"max_tokens must be an integer in 1..{self.max_tokens}", param="max_tokens")
        options: dict[str, Any] = {"max_new_tokens": max_tokens}
        for key, default in (("temperature", 0.0), ("top_p", 1.0), ("seed", None)):
            value = body.get(key, default)
            options[key] = default if value is None else value
        self._check_sampling(options)
        stop = body.get("stop")
        if stop is not None:
            from adafv.runtime.errors import OptionError
            from adafv.runtime.pipeline import check_stop

            try:
                stop = check_stop(stop)
            except OptionError as e:
                raise ApiError(400, str(e), param="stop") from None
            if stop:
                options["stop"] = stop
        n = body.get("n", 1)
        if n is not None and (isinstance(n, bool) or n != 1):
            raise ApiError(400, "n must be 1", param="n")
        stream = body.get("stream", False)
        if stream is not None and not isinstance(stream, bool):
            raise ApiError(400, f"stream must be true or false (a JSON boolean), got {stream!r:.40}", param="stream")
        stream_options = body.get("stream_options")
        if stream_options is not None and (not isinstance(stream_options, dict) or set(stream_options) -
                                           {"include_usage", "include_obfuscation"}):  # fmt: skip
            raise ApiError(400, "stream_options takes include_usage only", param="stream_options")
        usage = bool(stream_options and stream_options.get("include_usage") is True)
        return {"image": source, "question": question, "options": options, "stream": bool(stream), "usage": usage}

    @staticmethod
    def _check_sampling(options: dict) -> None:
        t, top_p, seed = options["temperature"], options["top_p"], options["seed"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 2:
            raise ApiError(400, f"temperature must be a number in [0, 2], got {t!r:.40}", param="temperature")
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise ApiError(400, f"top_p must be a number in (0, 1], got {top_p!r:.40}", param="top_p")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise ApiError(400, f"seed must be a non-negative integer, got {seed!r:.40}", param="seed")

    def image_source(self, url) -> tuple[str, Any]:
        """("bytes", data) for a data URL, ("path", path) for an allowed local file; checked, not yet decoded."""
        if not isinstance(url, str) or not url:
            raise ApiError(400, "image_url must carry a url", param="messages")
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            if ";base64" not in header:
                raise ApiError(400, "a data URL image must be base64-encoded", param="messages")
            try:
                data = base64.b64decode(payload, validate=True)
            except ValueError:
                raise ApiError(400, "the image's base64 payload is not valid base64", param="messages") from None
            return ("bytes", data)
        if url.startswith(("http://", "https://")):
            raise ApiError(400, "remote image URLs are not fetched: send the image as a base64 data URL",
                           param="messages")  # fmt: skip
        if self.local_files is None:
            raise ApiError(400, "local file paths are refused (start the server with --allow-local-files DIR)",
                           param="messages")  # fmt: skip
        name = url.removeprefix("file://")
        if "\x00" in name:
            raise ApiError(400, "the image path holds a NUL character", param="messages")
        try:
            path = Path(name).resolve()
            inside = self.local_files in path.parents
        except (OSError, RuntimeError, ValueError) as e:  # a loop of links, a name too long for the system
            raise ApiError(400, f"the image path cannot be resolved: {type(e).__name__}", param="messages") from None
        if not inside:
            raise ApiError(403, f"{path} is outside the folder this server may read ({self.local_files})",
                           kind="permission_error", param="messages")  # fmt: skip
        return ("path", path)

    def decode(self, source: tuple[str, Any]):
        """Decode an image (refused from its header above `max_image_pixels`) and, with the bundle's spec, turn it
        into the graph's crops at once, so that only those are held while the request waits."""
        from adafv.runtime import load_image, load_image_bytes
        from adafv.runtime.errors import ImageError
        from adafv.runtime.preprocess import prepare

        kind, value = source
        try:
            if kind == "bytes":
                image = load_image_bytes(value, max_pixels=self.max_image_pixels, name="the image_url")
            else:
                image = load_image(value, max_pixels=self.max_image_pixels)
            return prepare(image, self.spec) if self.spec is not None else image
        except ImageError as e:
            raise ApiError(400, str(e), param="messages") from e
        except OSError as e:  # reading a local file: a name too long, a permission
            raise ApiError(400, f"the image file cannot be read: {e.strerror or type(e).__name__}",
                           param="messages") from None  # fmt: skip

    async def prepare(self, parsed: dict) -> dict:
        image = await asyncio.get_running_loop().run_in_executor(self.decoder, self.decode, parsed["image"])
        return {**parsed, "image": image}

    def close(self) -> None:
        self.decoder.shutdown(wait=False)
        self.backend.close()


def checked(result: dict) -> dict:
    """A backend's result, or the ApiError it stands for."""
    if "error" in result:
        raise ApiError(400, result["error"])
    return result


def finish_reason(result: dict) -> str:
    return "stop" if result["stopped"] in ("eos", "stop") else "length"


def usage(result: dict) -> dict:
    return {"prompt_tokens": result["prompt_tokens"], "completion_tokens": len(result["tokens"]),
            "total_tokens": result["prompt_tokens"] + len(result["tokens"])}  # fmt: skip


def completion(server: Server, result: dict) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": server.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                     "finish_reason": finish_reason(result)}],  # fmt: skip
        "usage": usage(result),
        "adafv": {
            "num_kept": result["num_kept"],
            "num_visual_tokens": result["num_visual_tokens"],
            "timings_ms": result["timings_ms"],
            **({"replica": result["replica"]} if "replica" in result else {}),
        },  # fmt: skip
    }


async def read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise ApiError(413, f"the request body is over {MAX_BODY // 2**20} MB", code="request_too_large")

    async def receive() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise ApiError(413, f"the request body is over {MAX_BODY // 2**20} MB", code="request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(receive(), BODY_TIMEOUT)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {BODY_TIMEOUT:g} s", code="timeout") from None


def parse_json(raw: bytes):
    try:
        return json.loads(raw)
    except RecursionError:
        raise ApiError(400, "the body is JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not JSON") from None


async def _until_disconnected(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.1)


async def _next_or_gone(pieces, gone: asyncio.Task):
    """The generator's next item, or `_GONE` when the client left first."""
    step = asyncio.ensure_future(pieces.__anext__())
    await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
    if step.done():
        return step.result()  # StopAsyncIteration propagates
    step.cancel()  # and wait until the generator has left its await: only then can it be closed
    try:
        await step
    except BaseException:  # noqa: BLE001 - the cancellation, or whatever the generator raised on its way out
        pass
    return _GONE


_GONE = object()


async def _watched(pieces, gone: asyncio.Task):
    """The backend's items (pieces of text, then the result dict) until the result, or `_GONE` once if the client
    leaves first."""
    while True:
        try:
            item = await _next_or_gone(pieces, gone)
        except StopAsyncIteration:
            return
        yield item
        if item is _GONE or isinstance(item, dict):
            return


def _guarded(server: Server, handler):
    """Every failure of a route becomes its JSON answer here (never re-raised to Starlette, which would log a
    traceback): an ApiError as it is, anything else as one logged 500 line."""

    @functools.wraps(handler)
    async def route(request: Request):
        try:
            return await handler(request)
        except ApiError as e:
            error = e
        except Exception as e:
            error = internal(e)
        server.metrics.count(error.status)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    return route


def create_app(server: Server):
    app = FastAPI(title="adafv", version=_version(), docs_url=None, redoc_url=None, openapi_url=None)

    async def health(request: Request):
        return JSONResponse({"status": "ok", "model": server.model, "queue": server.admitted,
                             "max_queue": server.max_queue, **server.backend.describe()})  # fmt: skip

    async def models(request: Request):
        server.check_key(request.headers.get("authorization"))
        return JSONResponse({"object": "list", "data": [{"id": server.model, "object": "model", "created": 0,
                                                         "owned_by": "adafv"}]})  # fmt: skip

    async def metrics(request: Request):
        return PlainTextResponse(server.metrics.text(server.admitted), media_type="text/plain; version=0.0.4")

    async def chat(request: Request):
        server.check_key(request.headers.get("authorization"))
        admission = server.admit()  # before reading the body: a full queue costs the server nothing
        handed = False  # to an EventStream, which releases the place when the stream ends
        try:
            parsed = server.parse(parse_json(await read_body(request)))
            parsed = await server.prepare(parsed)  # decoded (one image at a time) and cut into crops
            if parsed["stream"]:
                handed = True
                return EventStream(server, parsed, request, admission)
            return await _complete(server, parsed, request)
        finally:
            if not handed:
                admission.release()

    app.add_api_route("/health", _guarded(server, health), methods=["GET"])
    app.add_api_route("/v1/models", _guarded(server, models), methods=["GET"])
    app.add_api_route("/metrics", _guarded(server, metrics), methods=["GET"])
    app.add_api_route("/v1/chat/completions", _guarded(server, chat), methods=["POST"])
    return app


async def _complete(server: Server, parsed: dict, request: Request):
    """A whole answer; generation stops at the next token when the client leaves (counted as 499)."""
    gone = asyncio.ensure_future(_until_disconnected(request))
    pieces = server.backend.stream(parsed)
    result = None
    try:
        async for item in _watched(pieces, gone):
            if isinstance(item, dict):
                result = item
    finally:
        gone.cancel()
        await pieces.aclose()
    if result is None or result.get("cancelled"):
        server.metrics.count(CLIENT_GONE)
        return JSONResponse({"error": {"message": "client closed the request", "type": "client_gone"}},
                            status_code=CLIENT_GONE)  # fmt: skip
    result = checked(result)
    server.metrics.answered(result)
    server.metrics.count(200)
    return JSONResponse(completion(server, result))


class EventStream(Response):
    """The streamed answer as server-sent events (an ASGI response of our own, so that the end of every stream is
    ours to handle): a role chunk, one chunk per piece of text, a final chunk with the finish reason (and usage when
    asked), `[DONE]`. A failure after the stream started is an error event, then `[DONE]`. The client leaving stops
    the generation at the next token and counts the request under 499. Its admission is released exactly once."""

    def __init__(self, server: Server, parsed: dict, request: Request, admission: Admission):
        super().__init__(status_code=200, media_type="text/event-stream")
        self.server, self.parsed, self.request, self.admission = server, parsed, request, admission

    async def __call__(self, scope, receive, send) -> None:
        server = self.server
        gone = asyncio.ensure_future(_until_disconnected(self.request))
        pieces = server.backend.stream(self.parsed)
        status = CLIENT_GONE
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                                    (b"cache-control", b"no-cache")]})  # fmt: skip
            async for event, now in self._events(pieces, gone):
                status = now
                await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client's socket closed under us
            status = CLIENT_GONE
        finally:
            gone.cancel()
            await pieces.aclose()  # a client that went away stops its generation at the next token
            self.admission.release()
            server.metrics.count(status)

    async def _events(self, pieces, gone):
        """(event text, the request's status so far); ends early when the client leaves."""
        server, parsed = self.server, self.parsed
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": server.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}  # fmt: skip
            return f"data: {json.dumps(body)}\n\n"

        yield chunk({"role": "assistant", "content": ""}), CLIENT_GONE
        result = None
        try:
            async for item in _watched(pieces, gone):
                if isinstance(item, dict):
                    result = item
                elif item is not _GONE:
                    yield chunk({"content": item}), CLIENT_GONE
            if result is None or result.get("cancelled"):
                return
            result = checked(result)
        except ApiError as e:
            yield f"data: {json.dumps(e.body())}\n\n", e.status
            yield "data: [DONE]\n\n", e.status
            return
        except Exception as e:  # a failure in the model's thread, after the stream started
            error = internal(e)
            yield f"data: {json.dumps(error.body())}\n\n", error.status
            yield "data: [DONE]\n\n", error.status
            return
        server.metrics.answered(result)
        yield chunk({}, finish_reason(result)), 200
        if parsed.get("usage"):
            yield f"data: {json.dumps({'id': ident, 'object': 'chat.completion.chunk', 'created': created, 'model': server.model, 'choices': [], 'usage': usage(result)})}\n\n", 200  # noqa: E501
        yield "data: [DONE]\n\n", 200


def _version() -> str:
    import adafv

    return adafv.__version__


def _timeouts(base):
    """uvicorn's HTTP protocol with a deadline for a request's headers: a connection that opens and sends nothing,
    or part of a request line, is closed after HEADER_TIMEOUT seconds (uvicorn itself would keep it forever). The
    deadline is armed when the connection opens and after each response; a request whose headers completed (a new
    cycle) disarms it."""

    class WithHeaderTimeout(base):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm_header_deadline()

        def _arm_header_deadline(self):
            cycle = self.cycle

            def expire():
                if self.cycle is cycle and not self.transport.is_closing():
                    self.transport.close()

            self.loop.call_later(HEADER_TIMEOUT, expire)

    WithHeaderTimeout.__name__ = f"{base.__name__}WithHeaderTimeout"
    return WithHeaderTimeout


def uvicorn_config(app, host: str, port: int, log_level: str = "warning"):
    """The server's uvicorn settings (tests use the same): keep-alive and header timeouts, no access log."""
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          timeout_keep_alive=KEEP_ALIVE, http=_timeouts(AutoHTTPProtocol))  # fmt: skip


def serve(bundle: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_queue: int | None = None, max_tokens: int = MAX_TOKENS, local_files: str | None = None,
          replicas: int | None = None, ray_address: str | None = None,
          max_image_pixels: int = MAX_IMAGE_PIXELS) -> None:  # fmt: skip
    """Serve the bundle until interrupted: in this process (warmed up), or with `replicas` on Ray Serve
    (adafv.serve.cluster). `max_queue` (requests admitted at once) defaults to 8 per replica."""
    import uvicorn

    from adafv.errors import ConfigError
    from adafv.runtime import manifest as bundle_format

    from .keys import check_api_key

    check_api_key(api_key)
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    if local_files is not None and not Path(local_files).is_dir():
        raise ConfigError(f"--allow-local-files {local_files}: {'not a folder' if Path(local_files).exists() else 'no such folder'}")  # noqa: E501
    manifest = bundle_format.read_manifest(Path(bundle))
    name = manifest["model"]["name"]
    if replicas:
        from .cluster import RayBackend

        backend = RayBackend(bundle, replicas, ray_address, gpu=manifest["target"] == "cuda")
    else:
        from adafv.runtime import Pipeline

        backend = LocalBackend(Pipeline.load(bundle, warmup=True))
    server = Server(backend, name, api_key, max_queue or 8 * (replicas or 1), max_tokens,
                    Path(local_files) if local_files else None, max_image_pixels,
                    preprocess_spec=manifest["preprocess"])  # fmt: skip
    try:
        uvicorn.Server(uvicorn_config(create_app(server), host, port)).run()
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: a clean exit, as uvicorn.run gives
        pass
    finally:
        server.close()
