"""adafv serve --replicas: two Ray Serve replicas of a bundle behind the one front end, started by the real CLI on a
free loopback port: the openai client's answers equal the runtime's, requests spread over both replicas (20 at once,
none lost), streaming works and streams cut short leave both replicas serving, and Ctrl-C stops the server with its
local Ray cluster (no process left)."""

from __future__ import annotations

import base64
import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
pytest.importorskip("ray.serve", reason="the cluster extra (ray[serve]) is not installed")
openai = pytest.importorskip("openai", reason="the openai client (dev extra) is not installed")

pytestmark = pytest.mark.slow  # a Ray cluster: ~10-30 s to start, ~5 s to stop

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "rocket.jpg"


def _message(text: str) -> list[dict]:
    url = "data:image/jpeg;base64," + base64.b64encode(PHOTO.read_bytes()).decode()
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": parts}]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]


def test_two_replicas_behind_one_server(make_bundle):
    import tempfile

    from adafv.runtime import Pipeline, load_image

    bundle = make_bundle("tiny-llava-next", 64).path
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}  # this test's own Ray session files
    server = subprocess.Popen([sys.executable, "-m", "adafv.cli.main", "serve", str(bundle), "--replicas", "2",
                               "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                health = httpx.get(base + "/health", timeout=2).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not come up in 180 s"
                time.sleep(1)
        assert health["replicas"] == 2 and health["backend"] == "ray" and health["max_queue"] == 16
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
        prompt = "What is in the picture?"
        want = Pipeline.load(bundle).run(load_image(PHOTO), prompt, max_new_tokens=8)["text"]
        got = client.chat.completions.create(model="tiny-llava-next", messages=_message(prompt), max_tokens=8)
        assert got.choices[0].message.content == want

        def ask(i: int) -> str:
            reply = httpx.post(base + "/v1/chat/completions", json={"messages": _message(prompt), "max_tokens": 8},
                               timeout=120)  # fmt: skip
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == want
            return reply.json()["adafv"]["replica"]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replicas = list(pool.map(ask, range(20)))
        assert len(replicas) == 20 and len(set(replicas)) == 2, replicas  # none lost, both replicas answered

        stream = client.chat.completions.create(model="tiny-llava-next", messages=_message(prompt), max_tokens=8,
                                                stream=True)  # fmt: skip
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want
        for _ in range(2):  # cut two streams short (one per replica at most): both replicas must still answer
            with httpx.stream(
                "POST",
                base + "/v1/chat/completions",
                timeout=120,
                json={"messages": _message(prompt), "max_tokens": 64, "stream": True},
            ) as cut:
                next(cut.iter_lines())
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert len(list(pool.map(ask, range(4)))) == 4
        assert 'adafv_requests_total{status="200"} 26' in httpx.get(base + "/metrics").text
    finally:
        family = _descendants(server.pid)
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0, server.stdout.read()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in family if _alive(p)], "Ray processes outlived the server"
    import shutil

    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_ray_cluster_that_cannot_start_is_one_line(make_bundle, tmp_path):
    """Ray refusing to start (here: a temp dir so deep its socket paths are too long) is a one-line error, exit 2."""
    bundle = make_bundle("tiny-llava-next", 64).path
    deep = tmp_path / ("x" * 90)
    deep.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "adafv.cli.main", "serve", str(bundle), "--replicas", "2"],
        env={**os.environ, "RAY_TMPDIR": str(deep)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("adafv: error")]
    assert errors and "could not start a local Ray cluster" in errors[0], out.stderr
    assert "Traceback" not in out.stderr


def test_more_gpu_replicas_than_gpus_is_one_line(make_bundle):
    """A cuda bundle's replica takes one GPU: asking for more than the cluster has (here: none) is refused in one
    line before any replica starts (99: more than any machine here has, GPU or not)."""
    import re

    bundle = make_bundle("tiny-llava-next", 64, target="cuda").path
    out = subprocess.run([sys.executable, "-m", "adafv.cli.main", "serve", str(bundle), "--replicas", "99"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("adafv: error")]
    assert len(errors) == 1, out.stderr
    assert re.fullmatch(r"adafv: error: 99 replicas need 99 GPUs; the Ray cluster has \d+", errors[0]), errors
    assert "Traceback" not in out.stderr
