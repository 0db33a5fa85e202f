"""`adafv serve BUNDLE`: the runtime behind an OpenAI-compatible HTTP API, for a robot's software to call.

    POST /v1/chat/completions   one image + one question per request; `stream: true` answers as server-sent events
    GET  /v1/models             the bundle's model
    GET  /health                liveness, the queue
    GET  /metrics               Prometheus text: requests by status, queue depth, time to first token, tokens/s

Built on FastAPI (Starlette) served by uvicorn: the maintained ASGI stack with the most users, whose streaming and
disconnect handling we use directly. (LitServe wraps the same stack with batching and its own worker model; the
runtime answers one question at a time per device, so its extra layer bought nothing here.)

One model instance per process (one device), run by one worker thread; requests wait in a bounded queue, and a full
queue answers 503 with Retry-After. A client that disconnects mid-stream stops its generation at the next token and
frees its place. Loopback by default; optional bearer API key. Bounded: request body, image pixels (the runtime's
limit), the text after the image (the engine's max_text), `max_tokens`. Every bad request is a 4xx with an
OpenAI-style error body.

The image is an `image_url` part with a base64 `data:` URL; a local file path (or `file://` URL) only with
`--allow-local-files DIR`, and only inside DIR. Of the messages, the last user message is the question (earlier
turns and system messages are not fed to the model: the bundle answers one question about one image).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request  # module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

MAX_BODY = 20 * 2**20  # bytes of a request (a 4K PNG as base64 is ~15 MB)
MAX_TOKENS = 512


class ApiError(Exception):
    """A request error answered with its HTTP status and an OpenAI-style body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Cancelled(Exception):
    """Raised inside generation when the client went away."""


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
            lines = ["# HELP adafv_requests_total Requests answered, by HTTP status.",
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


def run_pipeline(pipe, request: dict, on_token=None) -> dict:
    """One answer from a Pipeline, in whatever thread runs the model; the runtime's refusals (prompt too long, options
    out of range) become `{"error": message}`, a value that crosses process boundaries (Ray) as well as threads."""
    from adafv.runtime.errors import RuntimeFailure

    try:
        return pipe.run(request["image"], request["question"], on_token=on_token, **request["options"])
    except RuntimeFailure as e:
        return {"error": str(e)}


async def stream_in_thread(executor, run, request: dict):
    """Run `run(request, on_token)` in `executor`; yield each piece of text as it comes, then the result dict. Closing
    the generator early (a client gone) makes the next token raise `_Cancelled` in the model's thread, so the model
    is free again after at most one more step; the result is then `{"cancelled": True}`."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()

    def on_token(piece: str) -> None:
        if cancelled.is_set():
            raise _Cancelled
        loop.call_soon_threadsafe(pieces.put_nowait, piece)

    def guarded(req):
        if cancelled.is_set():  # the client left while the request waited: do not start it
            return {"cancelled": True}
        try:
            return run(req, on_token)
        except _Cancelled:
            return {"cancelled": True}

    future = loop.run_in_executor(executor, guarded, request)
    future.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
    try:
        while (piece := await pieces.get()) is not None:
            yield piece
        yield await future
    finally:
        cancelled.set()


class LocalBackend:
    """The model in this process: one Pipeline, run by one worker thread (one model instance per device)."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adafv-model")

    async def answer(self, request: dict) -> dict:
        return await asyncio.get_running_loop().run_in_executor(self.worker, run_pipeline, self.pipe, request)

    def stream(self, request: dict):
        """Pieces of text, then the result dict (an async generator)."""
        return stream_in_thread(self.worker, lambda req, on_token: run_pipeline(self.pipe, req, on_token), request)

    def describe(self) -> dict:
        return {"replicas": 1}

    def close(self) -> None:
        self.worker.shutdown(wait=False)


class Server:
    """The state behind the app: the model backend (a Pipeline here, or replicas elsewhere: adafv.serve.cluster), a
    bounded queue, the metrics."""

    def __init__(self, backend, model: str, api_key: str | None = None, max_queue: int = 8,
                 max_tokens: int = MAX_TOKENS, local_files: Path | None = None):  # fmt: skip
        self.backend = backend if hasattr(backend, "stream") else LocalBackend(backend)  # a Pipeline: run it here
        self.model, self.api_key = model, api_key
        self.max_queue, self.max_tokens = max_queue, max_tokens
        self.local_files = local_files.resolve() if local_files else None
        self.admitted = 0
        self.lock = threading.Lock()
        self.metrics = Metrics()

    # -- admission ---------------------------------------------------------------------------------------------------

    def admit(self) -> None:
        with self.lock:
            if self.admitted >= self.max_queue:
                raise ApiError(503, f"the server is busy: {self.admitted} requests queued (limit {self.max_queue}); "
                                    "retry shortly", kind="server_busy", headers={"Retry-After": "1"})  # fmt: skip
            self.admitted += 1

    def release(self) -> None:
        with self.lock:
            self.admitted -= 1

    def check_key(self, authorization: str | None) -> None:
        if self.api_key and authorization != f"Bearer {self.api_key}":
            raise ApiError(401, "invalid or missing API key (Authorization: Bearer ...)", kind="authentication_error")

    # -- the request ---------------------------------------------------------------------------------------------------

    def parse(self, body: dict) -> dict[str, Any]:
        """The image, the question and the generation options of a chat-completions request, checked."""
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.model:
            raise ApiError(404, f"model {model!r} is not served here; this server serves {self.model!r}",
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
        url = images[0].get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        image = self.image(url)
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 64))
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= self.max_tokens:
            raise ApiError(400, f"max_tokens must be an integer in 1..{self.max_tokens}", param="max_tokens")
        options = {"max_new_tokens": max_tokens}
        for key, default in (("temperature", 0.0), ("top_p", 1.0), ("seed", None)):
            value = body.get(key, default)
            options[key] = default if value is None else value
        if body.get("n", 1) != 1:
            raise ApiError(400, "n must be 1", param="n")
        return {"image": image, "question": question, "options": options, "stream": bool(body.get("stream"))}

    def image(self, url) -> Any:
        from adafv.runtime import load_image, load_image_bytes
        from adafv.runtime.errors import ImageError

        if not isinstance(url, str) or not url:
            raise ApiError(400, "image_url must carry a url", param="messages")
        try:
            if url.startswith("data:"):
                header, _, payload = url.partition(",")
                if ";base64" not in header:
                    raise ApiError(400, "a data URL image must be base64-encoded", param="messages")
                try:
                    data = base64.b64decode(payload, validate=True)
                except ValueError:
                    raise ApiError(400, "the image's base64 payload is not valid base64", param="messages") from None
                return load_image_bytes(data, name="the image_url")
            if url.startswith(("http://", "https://")):
                raise ApiError(400, "remote image URLs are not fetched: send the image as a base64 data URL",
                               param="messages")  # fmt: skip
            if self.local_files is None:
                raise ApiError(400, "local file paths are refused (start the server with --allow-local-files DIR)",
                               param="messages")  # fmt: skip
            path = Path(url.removeprefix("file://")).resolve()
            if self.local_files not in path.parents:
                raise ApiError(403, f"{path} is outside the folder this server may read ({self.local_files})",
                               kind="permission_error", param="messages")  # fmt: skip
            return load_image(path)
        except ImageError as e:
            raise ApiError(400, str(e), param="messages") from e

    async def answer(self, request: dict) -> dict:
        return checked(await self.backend.answer(request))


def checked(result: dict) -> dict:
    """A backend's result, or the ApiError it stands for."""
    if "error" in result:
        raise ApiError(400, result["error"])
    return result


def completion(server: Server, result: dict) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": server.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result["text"]},
                "finish_reason": "stop" if result["stopped"] == "eos" else "length",
            }
        ],  # fmt: skip
        "usage": {
            "prompt_tokens": result["prompt_tokens"],
            "completion_tokens": len(result["tokens"]),
            "total_tokens": result["prompt_tokens"] + len(result["tokens"]),
        },  # fmt: skip
        "adafv": {
            "num_kept": result["num_kept"],
            "num_visual_tokens": result["num_visual_tokens"],
            "timings_ms": result["timings_ms"],
            **({"replica": result["replica"]} if "replica" in result else {}),
        },  # fmt: skip
    }


def create_app(server: Server):
    app = FastAPI(title="adafv", version=_version(), docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        server.metrics.count(error.status)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):  # a bug: say so, without a traceback
        server.metrics.count(500)
        body = ApiError(500, f"internal error: {type(error).__name__}", kind="server_error").body()
        return JSONResponse(body, status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": server.model, "queue": server.admitted, "max_queue": server.max_queue,
                **server.backend.describe()}  # fmt: skip

    @app.get("/v1/models")
    async def models(request: Request):
        server.check_key(request.headers.get("authorization"))
        return {"object": "list", "data": [{"id": server.model, "object": "model", "created": 0, "owned_by": "adafv"}]}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(server.metrics.text(server.admitted), media_type="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        server.check_key(request.headers.get("authorization"))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            raise ApiError(413, f"the request body is over {MAX_BODY // 2**20} MB", code="request_too_large")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise ApiError(413, f"the request body is over {MAX_BODY // 2**20} MB", code="request_too_large")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the body is not JSON") from None
        parsed = await asyncio.get_running_loop().run_in_executor(None, server.parse, body)  # decoding: off the loop
        server.admit()
        if not parsed["stream"]:
            try:
                result = await server.answer(parsed)
            finally:
                server.release()
            server.metrics.answered(result)
            server.metrics.count(200)
            return completion(server, result)
        return StreamingResponse(_stream(server, parsed, request), media_type="text/event-stream")

    return app


async def _stream(server: Server, parsed: dict, request):
    """Server-sent events: a role chunk, one chunk per piece of text, a final chunk with the finish reason."""
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict, finish: str | None = None) -> str:
        body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": server.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
        return f"data: {json.dumps(body)}\n\n"

    pieces = server.backend.stream(parsed)
    try:
        yield chunk({"role": "assistant", "content": ""})
        result = None
        async for piece in pieces:
            if isinstance(piece, dict):
                result = piece
                break
            if await request.is_disconnected():
                return  # the finally below stops the generation
            yield chunk({"content": piece})
        if result is None or result.get("cancelled"):
            return
        try:
            result = checked(result)
        except ApiError as e:
            yield f"data: {json.dumps(e.body())}\n\n"
            server.metrics.count(e.status)
            return
        server.metrics.answered(result)
        server.metrics.count(200)
        yield chunk({}, "stop" if result["stopped"] == "eos" else "length")
        yield "data: [DONE]\n\n"
    finally:
        await pieces.aclose()  # a client that went away stops its generation at the next token
        server.release()


def _version() -> str:
    import adafv

    return adafv.__version__


def serve(bundle: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_queue: int | None = None, max_tokens: int = MAX_TOKENS, local_files: str | None = None,
          replicas: int | None = None, ray_address: str | None = None) -> None:  # fmt: skip
    """Serve the bundle until interrupted: in this process (warmed up), or with `replicas` on Ray Serve
    (adafv.serve.cluster). `max_queue` (requests admitted at once) defaults to 8 per replica."""
    import uvicorn

    from adafv.runtime import manifest as bundle_format

    manifest = bundle_format.read_manifest(Path(bundle))
    name = manifest["model"]["name"]
    if replicas:
        from .cluster import RayBackend

        backend = RayBackend(bundle, replicas, ray_address, gpu=manifest["target"] == "cuda")
    else:
        from adafv.runtime import Pipeline

        backend = LocalBackend(Pipeline.load(bundle, warmup=True))
    server = Server(backend, name, api_key, max_queue or 8 * (replicas or 1), max_tokens,
                    Path(local_files) if local_files else None)  # fmt: skip
    try:
        uvicorn.run(create_app(server), host=host, port=port, log_level="warning")
    finally:
        backend.close()
