"""adafv serve: the official `openai` client against a server on a free loopback port; streaming; every bad request a
4xx with an OpenAI error body; the bounded queue (503 + Retry-After); a client that disconnects mid-stream frees its
place; a load test (50 concurrent clients, 200 requests)."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
openai = pytest.importorskip("openai", reason="the openai client (dev extra) is not installed")

from adafv.serve.app import Server, create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "rocket.jpg"


def data_url(path: Path = PHOTO) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()


def message(text: str = "What is in the picture?", url: str | None = None) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": url or data_url()}}]}]  # fmt: skip


@contextlib.contextmanager
def running(server: Server):
    """The app on a free loopback port, with the uvicorn settings `adafv serve` uses (timeouts included)."""
    import uvicorn

    from adafv.serve.app import uvicorn_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn_config(create_app(server), "127.0.0.1", port, log_level="error"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def pipe(make_bundle):
    from adafv.runtime import Pipeline

    return Pipeline.load(make_bundle("tiny-llava-next", 64).path, warmup=True)


@pytest.fixture(scope="module")
def base(pipe, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    (allowed / "photo.jpg").write_bytes(PHOTO.read_bytes())
    server = Server(pipe, "tiny-llava-next", max_queue=64, max_tokens=64, local_files=allowed)
    with running(server) as url:
        yield url, server, allowed


@pytest.fixture
def client(base):
    return openai.OpenAI(base_url=base[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_chat_completion_equals_the_runtime(client, pipe):
    from adafv.runtime import load_image

    reply = client.chat.completions.create(model="tiny-llava-next", messages=message(), max_tokens=8)
    want = pipe.run(load_image(PHOTO), "What is in the picture?", max_new_tokens=8)
    assert reply.choices[0].message.content == want["text"]
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens == len(want["tokens"])
    assert reply.usage.prompt_tokens == want["prompt_tokens"]


def test_streaming_gives_the_same_text(client):
    full = client.chat.completions.create(model="tiny-llava-next", messages=message(), max_tokens=10)
    stream = client.chat.completions.create(model="tiny-llava-next", messages=message(), max_tokens=10, stream=True)
    pieces, finish = [], None
    for event in stream:
        delta = event.choices[0].delta
        if delta.content:
            pieces.append(delta.content)
        finish = event.choices[0].finish_reason or finish
    assert "".join(pieces).strip() == full.choices[0].message.content and finish in ("stop", "length")


def test_models_health_metrics(client, base):
    assert [m.id for m in client.models.list().data] == ["tiny-llava-next"]
    health = httpx.get(base[0] + "/health").json()
    assert health["status"] == "ok" and health["max_queue"] == 64
    client.chat.completions.create(model="tiny-llava-next", messages=message(), max_tokens=2)
    text = httpx.get(base[0] + "/metrics").text
    assert 'adafv_requests_total{status="200"}' in text and "adafv_queue_depth 0" in text
    assert "adafv_time_to_first_token_seconds_count" in text


def test_local_files_only_inside_the_allowed_folder(client, base):
    allowed = base[2]
    reply = client.chat.completions.create(model="tiny-llava-next", messages=message(url=str(allowed / "photo.jpg")),
                                           max_tokens=2)  # fmt: skip
    assert reply.choices[0].message.content is not None
    with pytest.raises(openai.PermissionDeniedError, match="outside the folder"):
        client.chat.completions.create(model="tiny-llava-next", messages=message(url=str(PHOTO)), max_tokens=2)


@pytest.mark.parametrize(
    "body, status, text",
    [
        ({"model": "tiny-llava-next", "messages": [{"role": "user", "content": "hi"}]}, 400, "exactly one image_url"),
        ({"messages": message(url="data:image/png;base64,@@@")}, 400, "not valid base64"),
        (
            {"messages": message(url="data:image/png;base64," + base64.b64encode(b"not a png").decode())},
            400,
            "not an image",
        ),
        ({"messages": message(url="https://example.com/cat.jpg")}, 400, "not fetched"),
        ({"messages": message(), "max_tokens": 100000}, 400, "max_tokens must be"),
        ({"messages": message(), "temperature": -1}, 400, "temperature"),
        ({"messages": message(text=" ")}, 400, "no question"),
        ({"messages": message(text="describe " * 400)}, 400, "too long"),
        ({"messages": message(), "model": "gpt-9"}, 404, "not served here"),
        ({"messages": []}, 400, "at least one user message"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_bad_requests_are_4xx_with_an_openai_error(base, body, status, text):
    r = httpx.post(base[0] + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert text in error["message"] and error["type"]


def test_not_json_and_too_large(base):
    r = httpx.post(base[0] + "/v1/chat/completions", content=b"{nope", timeout=60)
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
    r = httpx.post(base[0] + "/v1/chat/completions", content=b"x" * (21 * 2**20), timeout=60)
    assert r.status_code == 413


def test_api_key(pipe):
    with running(Server(pipe, "tiny-llava-next", api_key="s3cret")) as url:
        bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="tiny-llava-next", messages=message(), max_tokens=2)
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model="tiny-llava-next", messages=message(), max_tokens=2).choices


class SlowPipe:
    """A stand-in model: `total` tokens, one every `pause` seconds, until released or told to stop."""

    def __init__(self, total: int = 200, pause: float = 0.02):
        self.total, self.pause = total, pause
        self.calls = 0
        self.release = threading.Event()

    def run(self, image, prompt, max_new_tokens=32, temperature=0.0, top_p=1.0, seed=None, on_token=None):
        for _ in range(self.total):
            if self.release.is_set():
                break
            time.sleep(self.pause)
            self.calls += 1
            if on_token is not None:
                on_token("x")
        return {"text": "x" * self.calls, "tokens": [1] * self.calls, "stopped": "length", "prompt_tokens": 10,
                "num_kept": 1, "num_visual_tokens": 1,
                "timings_ms": {"time_to_first_token": 1.0, "decode": 1.0}}  # fmt: skip


def test_a_full_queue_answers_503_with_retry_after():
    slow = SlowPipe(total=10_000, pause=0.01)
    server = Server(slow, "slow", max_queue=1)
    with running(server) as url:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, url + "/v1/chat/completions", json={"messages": message()}, timeout=60)
            deadline = time.monotonic() + 10
            while server.admitted < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            r = httpx.post(url + "/v1/chat/completions", json={"messages": message()}, timeout=60)
            assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]["message"]
            slow.release.set()
            assert first.result().status_code == 200


def test_a_client_that_disconnects_mid_stream_frees_its_place():
    slow = SlowPipe(total=500, pause=0.01)
    server = Server(slow, "slow", max_queue=1)
    with running(server) as url:
        with httpx.stream("POST", url + "/v1/chat/completions", json={"messages": message(), "stream": True},
                          timeout=60) as r:  # fmt: skip
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]  # the role chunk and a few tokens, then hang up
        assert any("chat.completion.chunk" in line for line in got)
        deadline = time.monotonic() + 10
        while (server.admitted or slow.calls < 3) and time.monotonic() < deadline:
            time.sleep(0.02)
        stopped_at = slow.calls
        time.sleep(0.3)
        assert server.admitted == 0 and slow.calls == stopped_at < 500  # generation stopped, the place is free


def test_load_50_clients_200_requests(base, record_property):
    url = base[0]

    def ask(i: int) -> tuple[int, float]:
        start = time.perf_counter()
        r = httpx.post(url + "/v1/chat/completions", json={"messages": message(), "max_tokens": 4}, timeout=120)
        return r.status_code, time.perf_counter() - start

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(ask, range(200)))
    seconds = time.perf_counter() - start
    codes = [c for c, _ in results]
    latencies = sorted(t for _, t in results)
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * len(latencies)) - 1]
    record_property("load_p50_s", p50)
    record_property("load_p95_s", p95)
    print(f"200 requests from 50 clients in {seconds:.1f} s: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    assert codes == [200] * 200 and seconds < 120  # none lost, bounded in time
