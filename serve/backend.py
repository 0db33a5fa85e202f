"""The model side of `adafv serve`, apart from the HTTP front end: one answer from a Pipeline in the model's thread,
streaming it token by token to an asyncio consumer with cancellation, and the in-process backend. The front end
(app.py) and the Ray replicas (cluster.py) both build on this module; neither imports the other's.

A backend has `answer(request) -> result`, `stream(request)` (an async generator of text pieces, then the result
dict), `describe()`, `close()`; a result is the runtime's dict, `{"error": message}` for a request the runtime
refused, or `{"cancelled": True}` for one whose client left.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor


class _Cancelled(Exception):
    """Raised inside generation when the client went away."""


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
    is free again after at most one more step, and closing returns only then; the result is `{"cancelled": True}`."""
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
        if not future.done():  # the model's thread stops at its next token: its place is free only then
            try:
                await asyncio.shield(future)
            except BaseException:  # noqa: BLE001 - its failure was the request's; it is over either way
                pass


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

    @property
    def preprocess_spec(self) -> dict | None:
        manifest = getattr(self.pipe, "manifest", None)
        return manifest.get("preprocess") if isinstance(manifest, dict) else None

    def close(self) -> None:
        self.worker.shutdown(wait=False)
