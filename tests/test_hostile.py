"""Hostile input, round 3 (issue 19): the file-writing commands, the server's authentication, admission and stream
endings, eval's resumption, EXIF orientation, calibration data, and the tracebacks and silent wrongs found by trying
the server, eval, calib and the CLI as a careless or hostile user would. Each test names the class it covers; each
failed on the main branch before the fix. The server cases run a real uvicorn on loopback with the settings
`adafv serve` uses, and the official `openai` client where it applies."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from adafv.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "rocket.jpg"
ADAFV = str(Path(sys.executable).with_name("adafv"))


def cli(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own exit
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(code: int, err: str, wanted: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("adafv") and "Traceback" not in err, err
    assert wanted in lines[0], err


@pytest.fixture(scope="module")
def bundle(make_bundle):
    return make_bundle("tiny-llava-next", 64).path


# ---- 1. data loss: show --out and convert --out never replace a file they did not write ------------------------------


def test_show_never_overwrites_the_input_or_a_file_it_did_not_write(tmp_path, capsys, bundle):
    photo = tmp_path / "input.jpg"
    shutil.copy(PHOTO, photo)
    original = photo.read_bytes()
    for force in ([], ["--force"]):  # the input, never, --force or not
        code, _, err = cli(capsys, "show", bundle, "--image", photo, "--prompt", "What?", "--out", photo, *force)
        one_line(code, err, "own input")
        assert photo.read_bytes() == original
    mine = tmp_path / "kept.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(mine)  # a user's file that happens to be called kept.png
    user = mine.read_bytes()
    code, _, err = cli(capsys, "show", bundle, "--image", photo, "--prompt", "What?", "--out", mine)
    one_line(code, err, "was not written by adafv show")
    assert mine.read_bytes() == user
    assert cli(capsys, "show", bundle, "--image", photo, "--prompt", "What?", "--out", mine, "--force")[0] == 0
    first = mine.read_bytes()
    assert first != user
    # a sheet show wrote is show's to replace (the default kept.png, re-run): no --force needed
    assert cli(capsys, "show", bundle, "--image", photo, "--prompt", "Why?", "--out", mine)[0] == 0
    jpg = tmp_path / "sheet.jpg"
    assert cli(capsys, "show", bundle, "--image", photo, "--prompt", "What?", "--out", jpg)[0] == 0
    assert cli(capsys, "show", bundle, "--image", photo, "--prompt", "What?", "--out", jpg)[0] == 0
    for out, wanted in ((tmp_path, "is a folder"), (tmp_path / "sheet.txt", "writes .png or .jpg"),
                        (tmp_path / "kept.png" / "x.png", "is a file, not a folder")):  # fmt: skip
        one_line(*cli(capsys, "show", bundle, "--image", photo, "--prompt", "What?", "--out", out)[::2], wanted)
    assert not list(tmp_path.glob(".*partial*"))  # nothing half-written left behind


def test_convert_never_overwrites_its_source_or_another_file(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(PHOTO, images / "x.jpg")
    source = tmp_path / "pope.jsonl"
    source.write_text(json.dumps({"question_id": 1, "image": "x.jpg", "text": "Is there a dog?", "label": "no"}) + "\n")
    original = source.read_bytes()
    for force in ([], ["--force"]):
        code, _, err = cli(capsys, "convert", "pope", source, "--images", images, "--out", source, *force)
        one_line(code, err, "own input")
        assert source.read_bytes() == original
    other = tmp_path / "notes.jsonl"
    other.write_text("my notes\n")
    one_line(*cli(capsys, "convert", "pope", source, "--images", images, "--out", other)[::2], "--force")
    assert other.read_text() == "my notes\n"
    assert cli(capsys, "convert", "pope", source, "--images", images, "--out", other, "--force")[0] == 0
    assert json.loads(other.read_text())["question"] == "Is there a dog?"


# ---- 2. authentication never silently off ----------------------------------------------------------------------------


def test_an_empty_api_key_is_refused_in_one_line(capsys, monkeypatch, bundle):
    one_line(*cli(capsys, "serve", bundle, "--api-key", "")[::2], "--api-key is empty")
    monkeypatch.setenv("ADAFV_API_KEY", "")
    one_line(*cli(capsys, "serve", bundle)[::2], "ADAFV_API_KEY is empty")
    monkeypatch.setenv("ADAFV_API_KEY", " padded ")
    one_line(*cli(capsys, "serve", bundle)[::2], "printable ASCII")
    from adafv.errors import ConfigError
    from adafv.serve.app import Server

    with pytest.raises(ConfigError, match="is empty"):
        Server(object(), "m", api_key="")


def test_keys_are_compared_in_constant_time(monkeypatch):
    import hmac

    from adafv.serve import keys

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(keys.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert keys.key_matches("s3cret", "Bearer s3cret") and calls  # the comparison is hmac's
    assert not keys.key_matches("s3cret", "Bearer s3cre") and not keys.key_matches("s3cret", None)
    assert not keys.key_matches("s3cret", "Bearer s3crét") and not keys.key_matches("s3cret", "bearer s3cret")


# ---- 3. eval resumes only answers of the same configuration ----------------------------------------------------------


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "rocket.jpg")
    shutil.copy(ROOT / "assets" / "toyworld.png", folder / "scene.png")
    rows = [{"image": "rocket.jpg", "question": "What is in the picture?", "answer": "rocket"},
            {"image": "scene.png", "question": "What color is the cross?", "answer": "blue"}]  # fmt: skip
    path = folder / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_refuses_answers_of_another_configuration(data, tmp_path, capsys, bundle):
    out = tmp_path / "out"
    base = ["eval", "--model", bundle, "--data", data, "--out", out, "--quiet", "--max-new-tokens", "2"]
    assert cli(capsys, *base)[0] == 0
    log = out / "answers" / "adafv-k64.jsonl"
    before = log.read_text()
    one_line(*cli(capsys, *base[:-1], "3")[::2], "max_new_tokens=2, not 3")
    one_line(*cli(capsys, *base, "--suffix", "Be brief.")[::2], "suffix=")
    # another bundle of the same method and keep (here: the same files under another signed manifest)
    other = tmp_path / "other-bundle"
    shutil.copytree(bundle, other)
    from adafv.runtime import manifest as bundle_format

    manifest = bundle_format.read_manifest(other)
    manifest["note"] = "rebuilt"
    bundle_format.write_manifest(other, {k: v for k, v in manifest.items() if k != bundle_format.DIGEST})
    one_line(*cli(capsys, "eval", "--model", other, *base[3:])[::2], "another configuration (bundle=")
    # the data file rewritten with another question under the same id
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[1]["question"] = "How many crosses are there?"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    one_line(*cli(capsys, *base)[::2], "was answered for another image or question")
    assert log.read_text() == before  # nothing was appended or rewritten by the refusals


def test_eval_default_out_keeps_models_apart(data, tmp_path, capsys, monkeypatch, bundle, make_bundle):
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "eval", "--model", bundle, "--data", data, "--quiet", "--max-new-tokens", "1")[0] == 0
    small = make_bundle("tiny-llava", 32, llm="fp32").path
    assert cli(capsys, "eval", "--model", small, "--data", data, "--quiet", "--max-new-tokens", "1")[0] == 0
    folders = sorted(p.name for p in (tmp_path / "eval-results" / "q").iterdir())
    assert folders == sorted([Path(bundle).name, Path(small).name])


def test_eval_refuses_duplicate_ids_and_drops_a_torn_last_line(data, tmp_path, capsys, bundle):
    dup = tmp_path / "dup.jsonl"
    row = {"image": str(PHOTO), "question": "q", "answer": "a"}
    dup.write_text(json.dumps({**row, "id": "7"}) + "\n" + json.dumps({**row, "id": 7}) + "\n")
    one_line(*cli(capsys, "eval", "--model", bundle, "--data", dup, "--out", tmp_path / "o")[::2], "id 7")
    implicit = tmp_path / "implicit.jsonl"  # an explicit id equal to another line's default (its line number)
    implicit.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": 1}) + "\n")
    one_line(*cli(capsys, "eval", "--model", bundle, "--data", implicit, "--out", tmp_path / "o")[::2], "line 1's")
    out = tmp_path / "torn"
    args = ["eval", "--model", bundle, "--data", data, "--out", out, "--quiet", "--max-new-tokens", "2"]
    assert cli(capsys, *args)[0] == 0
    log = out / "answers" / "adafv-k64.jsonl"
    whole = log.read_text()
    log.write_text(whole[: len(whole) - 25])  # power cut in the middle of the last row
    code, _, err = cli(capsys, *args)
    assert code == 0 and "last line is torn" in err and str(log) in err and "Traceback" not in err
    assert log.read_text() == whole  # dropped, answered again: the same row
    assert cli(capsys, *args)[0] == 0  # and the next resume is clean


# ---- 4. the server admits before it decodes; decoded pixels in flight are bounded -----------------------------------


def _one_bit_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (width, height), 1).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


@pytest.fixture(scope="module")
def served(bundle):
    """`adafv serve BUNDLE` itself, in its own process on a free loopback port."""
    port = _free_port()
    proc = subprocess.Popen([ADAFV, "serve", str(bundle), "--port", str(port), "--max-queue", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("adafv serve did not start: " + proc.stdout.read())
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)


def chat_body(image: bytes, mime: str = "image/png", **extra) -> dict:
    url = f"data:{mime};base64," + base64.b64encode(image).decode()
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is in the picture?"},
                                                      {"type": "image_url", "image_url": {"url": url}}]}],
            "max_tokens": 2, **extra}  # fmt: skip


@pytest.mark.slow
def test_twenty_hostile_images_stay_under_the_memory_bound(served):
    """20 concurrent requests of a ~10 kB 1-bit PNG whose header says 4096x4096 (16.8 MP: under the default limit):
    at most 8 are admitted (the others 503 before their body is read), and they are decoded one at a time into
    their crops, so the server's peak RSS grows by at most 300 MB (before: 20 x 16.8 MP images held at once, 3.5 GB
    at 7999x7999). The same image at 7999x7999 is refused from its header (400)."""
    import concurrent.futures

    url, proc = served
    before = _rss_mb(proc.pid)
    body = chat_body(_one_bit_png(4096, 4096))
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda _: httpx.post(url + "/v1/chat/completions", json=body, timeout=300).status_code,
                              range(20)))  # fmt: skip
    peak = _peak_rss_mb(proc.pid)
    assert set(codes) <= {200, 503} and codes.count(200) >= 8, codes
    assert peak - before < 300, (before, peak)
    r = httpx.post(url + "/v1/chat/completions", json=chat_body(_one_bit_png(7999, 7999)), timeout=60)
    assert r.status_code == 400 and "too large" in r.json()["error"]["message"]
    print(f"server RSS {before:.0f} MB before, peak {peak:.0f} MB with 20 concurrent 16.8 MP images")


# ---- 5. EXIF orientation, everywhere images enter --------------------------------------------------------------------


INVERSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_270}  # fmt: skip


def _stored(upright: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    """The bytes a camera writes: pixels as the sensor saw them, and the tag that says how to turn them."""
    stored = upright if orientation == 1 else upright.transpose(INVERSE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, format=fmt, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied(tmp_path, orientation):
    from adafv.runtime import load_image, load_image_bytes

    upright = Image.fromarray(np.random.default_rng(orientation).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    data = _stored(upright, orientation)
    path = tmp_path / "phone.png"
    path.write_bytes(data)
    for image in (load_image(path), load_image_bytes(data)):
        assert image.size == upright.size and np.array_equal(np.asarray(image), np.asarray(upright))


def test_a_portrait_phone_photo_is_answered_upright(tmp_path, capsys, bundle):
    """Orientation 6 on a landscape-stored photo: run sees the portrait image (its anyres grid) and answers as for
    the upright photo."""
    photo = Image.open(PHOTO).convert("RGB")
    upright = photo.crop((0, 0, photo.width, photo.width // 3)).transpose(Image.Transpose.ROTATE_90)  # portrait
    (tmp_path / "upright.png").write_bytes(_stored(upright, 1))
    (tmp_path / "phone.png").write_bytes(_stored(upright, 6))
    answers = []
    for name in ("upright.png", "phone.png"):
        code, out, _ = cli(capsys, "run", bundle, "--image", tmp_path / name, "--prompt", "What?", "--json",
                           "--max-new-tokens", "3")  # fmt: skip
        assert code == 0
        answers.append(json.loads(out))
    assert answers[0]["grid"] == answers[1]["grid"] and answers[0]["grid"][0] > answers[0]["grid"][1]  # tall
    assert answers[0]["kept_positions"] == answers[1]["kept_positions"] and answers[0]["text"] == answers[1]["text"]


# ---- 7. no traceback with a 500; a failure after streaming started ends the stream properly -------------------------


@pytest.fixture(scope="module")
def app_server(bundle, tmp_path_factory):
    from adafv.runtime import Pipeline
    from adafv.serve.app import Server

    from .test_serve import running

    allowed = tmp_path_factory.mktemp("allowed")
    (allowed / "loop.jpg").symlink_to(allowed / "loop.jpg")
    pipe = Pipeline.load(bundle, warmup=True)
    server = Server(pipe, "tiny-llava-next", max_queue=16, max_tokens=64, local_files=allowed)
    with running(server) as url:
        yield url, server, allowed, pipe


def _message(url: str = None, text: str = "What is in the picture?") -> list[dict]:
    url = url or "data:image/jpeg;base64," + base64.b64encode(PHOTO.read_bytes()).decode()
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": url}}]}]  # fmt: skip


def test_hostile_requests_are_4xx_and_never_a_traceback(app_server, capfd):
    url, _, allowed, _ = app_server
    nested = b'{"messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    cases = [
        (nested, 400, "nested too deeply"),
        (json.dumps({"messages": _message(text="what is \ud800 this?")}).encode(), 400, "lone UTF-16 surrogate"),
        (json.dumps({"messages": _message(url=str(allowed / "loop.jpg"))}).encode(), 400, "cannot be"),
        (json.dumps({"messages": _message(url=str(allowed) + "/a\u0000b.jpg")}).encode(), 400, "NUL"),
        (json.dumps({"messages": _message(url=str(allowed / ("x" * 5000)))}).encode(), 400, "cannot be"),
    ]
    for body, status, text in cases:
        r = httpx.post(url + "/v1/chat/completions", content=body, timeout=60)
        assert r.status_code == status and text in r.json()["error"]["message"], (r.status_code, r.text)
    r = httpx.post(url + "/v1/chat/completions", json={"messages": _message(), "temperature": 1e-320,
                                                       "max_tokens": 3}, timeout=60)  # fmt: skip
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None  # a tiny temperature
    captured = capfd.readouterr()
    assert "Traceback" not in captured.out + captured.err


class FailingPipe:
    """A model that sends two pieces, then fails in a way nobody planned for."""

    manifest = None

    def run(self, image, prompt, max_new_tokens=32, temperature=0.0, top_p=1.0, seed=None, on_token=None):
        on_token("a")
        on_token("b")
        raise ZeroDivisionError("a bug")


def test_a_failure_after_the_stream_started_ends_it_with_an_error_event_and_done(capfd):
    from adafv.serve.app import Server

    from .test_serve import running

    server = Server(FailingPipe(), "failing")
    with running(server) as url:
        with httpx.stream("POST", url + "/v1/chat/completions", json={"messages": _message(), "stream": True},
                          timeout=60) as r:  # fmt: skip
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert r.status_code == 200
        assert json.loads(events[-2][6:])["error"]["message"] == "internal error: ZeroDivisionError"
        assert events[-1] == "data: [DONE]"
        r = httpx.post(url + "/v1/chat/completions", json={"messages": _message()}, timeout=60)
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        metrics = httpx.get(url + "/metrics").text
    assert 'adafv_requests_total{status="500"} 2' in metrics
    captured = capfd.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert captured.err.count("adafv serve: internal error: ZeroDivisionError: a bug") == 2  # one line each


# ---- 8. fields accepted are honoured; the others are refused by name -------------------------------------------------


def test_stream_must_be_a_boolean_and_unsupported_fields_are_named(app_server):
    url = app_server[0]
    for extra, field in (({"stream": "false"}, "stream"), ({"response_format": {"type": "json_object"}},
                         "response_format"), ({"tools": [{"type": "function"}]}, "tools"),
                         ({"tool_choice": "auto"}, "tool_choice"), ({"logprobs": True}, "logprobs"),
                         ({"frequency_penalty": 0.5}, "frequency_penalty"), ({"temperatur": 0.5}, "temperatur"),
                         ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stop": [""]}, "stop")):  # fmt: skip
        r = httpx.post(url + "/v1/chat/completions", json={"messages": _message(), **extra}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == field, (extra, r.text)
    ok = {"response_format": {"type": "text"}, "tools": [], "logprobs": False, "user": "robot-7",
          "frequency_penalty": 0}  # no-op values and fields that change no answer
    r = httpx.post(url + "/v1/chat/completions", json={"messages": _message(), "max_tokens": 2, **ok}, timeout=60)
    assert r.status_code == 200, r.text


def test_stop_sequences_are_honoured(app_server):
    import openai

    url, _, _, pipe = app_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
    full = client.chat.completions.create(model="tiny-llava-next", messages=_message(), max_tokens=16)
    text = full.choices[0].message.content
    assert len(text) > 6, text  # the tiny twin's noise is long enough to cut
    stop = text[3:6]
    cut = client.chat.completions.create(model="tiny-llava-next", messages=_message(), max_tokens=16, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)].strip()
    assert cut.choices[0].finish_reason == "stop" and cut.usage.completion_tokens < full.usage.completion_tokens
    pieces = [e.choices[0].delta.content or "" for e in client.chat.completions.create(
        model="tiny-llava-next", messages=_message(), max_tokens=16, stop=stop, stream=True) if e.choices]  # fmt: skip
    assert "".join(pieces).strip() == cut.choices[0].message.content and stop not in "".join(pieces)


# ---- 9. work nobody waits for stops; every request is counted; half-open connections are closed ---------------------


def test_a_non_streaming_client_that_hangs_up_stops_its_generation():
    from adafv.serve.app import Server

    from .test_serve import SlowPipe, running

    slow = SlowPipe(total=2000, pause=0.01)
    server = Server(slow, "slow", max_queue=1)
    with running(server) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/chat/completions", json={"messages": _message()}, timeout=0.5)
        deadline = time.monotonic() + 10
        while server.admitted and time.monotonic() < deadline:
            time.sleep(0.02)
        stopped_at = slow.calls
        time.sleep(0.3)
        assert server.admitted == 0 and slow.calls == stopped_at < 2000
        with httpx.stream("POST", url + "/v1/chat/completions", json={"messages": _message(), "stream": True},
                          timeout=60) as r:  # fmt: skip
            next(r.iter_lines())
        deadline = time.monotonic() + 10
        while server.admitted and time.monotonic() < deadline:
            time.sleep(0.02)
        metrics = httpx.get(url + "/metrics").text
    assert 'adafv_requests_total{status="499"} 2' in metrics


def test_half_open_connections_are_closed(app_server, monkeypatch):
    from adafv.serve import app

    monkeypatch.setattr(app, "HEADER_TIMEOUT", 0.5)
    url = app_server[0]
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as silent, socket.create_connection((host, int(port))) as slow:
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        for s in (silent, slow):
            s.settimeout(5)
            assert s.recv(1024) == b""  # closed by the server within the deadline, not kept forever


# ---- 10. the CLI: one line, never a traceback ---------------------------------------------------------------------


def _bad_data() -> dict[str, tuple[str, str]]:
    image = str(PHOTO)
    return {
        "a JSON string": (json.dumps("just text"), "not a str"),
        "a number": ("42", "not a int"),
        "image null": (json.dumps({"image": None, "question": "q", "answer": "a"}), "'image' must be"),
        "image 5": (json.dumps({"image": 5, "question": "q", "answer": "a"}), "'image' must be"),
        "answer a number": (json.dumps({"image": image, "question": "q", "answer": 3}), "'answer' must be"),
        "label not yes/no": (json.dumps({"image": image, "question": "q", "answer": "a", "label": 1}), "'label'"),
        "image missing": (json.dumps({"image": "nope.jpg", "question": "q", "answer": "a"}), "not found"),
    }


def test_eval_validates_the_whole_file_first(tmp_path, capsys, bundle):
    good = json.dumps({"image": str(PHOTO), "question": "q", "answer": "a"})
    for name, (line, wanted) in _bad_data().items():
        data = tmp_path / f"{name.replace(' ', '-').replace('/', '-')}.jsonl"
        data.write_text(good + "\n" + line + "\n")  # the bad line second: found before anything is answered
        code, _, err = cli(capsys, "eval", "--model", bundle, "--data", data, "--out", tmp_path / "o", "--quiet")
        one_line(code, err, wanted)
        assert not (tmp_path / "o").exists()
    (tmp_path / "latin1.jsonl").write_bytes(good.encode().replace(b'"q"', b'"\xe9"'))
    (tmp_path / "a-file").write_text("x")
    for data, out, wanted in ((tmp_path / "missing.jsonl", tmp_path / "o", "not found"),
                              (tmp_path, tmp_path / "o", "is not a file"),
                              (tmp_path / "latin1.jsonl", tmp_path / "o", "not UTF-8"),
                              (tmp_path / "image-null.jsonl", tmp_path / "a-file", "'image' must be")):  # fmt: skip
        one_line(*cli(capsys, "eval", "--model", bundle, "--data", data, "--out", out)[::2], wanted)
    data = tmp_path / "fine.jsonl"
    data.write_text(good + "\n")
    one_line(*cli(capsys, "eval", "--model", bundle, "--data", data, "--out", tmp_path / "a-file")[::2],
             "is an existing file")  # fmt: skip


CONVERT_CASES = [
    ("gqa", b"{nope", "not JSON"),
    ("gqa", b"[1, 2]", "one JSON object of questions"),
    ("gqa", b'{"q1": 5}', "is a JSON int"),
    ("gqa", b'{"q1": {"question": "q", "answer": "a"}}', "has no 'imageId'"),
    ("gqa", b'{"q1": {"imageId": "n1", "question": 7, "answer": "a"}}', "'question' must be"),
    ("gqa", b'{"q1": {"imageId": "../../etc/passwd", "question": "q", "answer": "a"}}', "inside --images"),
    ("gqa", b"\xff\xfe\x00\x00", "not UTF-8"),
    ("gqa", b"{}", "holds no questions"),
    ("pope", b'{"question_id": 1, "image": "x.jpg", "text": "q", "label": "maybe"}', "yes or no"),
    ("pope", b'{"question_id": 1, "image": "x.jpg", "text": "q"}', "has no 'label'"),
    ("pope", b'"a string"', "is a JSON str"),
    ("pope", b'{"question_id": 1, "image": "x.jpg", "text": "q", "label": "no"}\n{"question_id": 1, "image": '
             b'"x.jpg", "text": "q2", "label": "yes"}', "appears twice"),  # fmt: skip
    ("textvqa", b'{"data": 5}', "'data' is a list"),
    ("textvqa", b'{"data": [{"question_id": 1, "image_id": "a", "question": "q", "answers": [1, 2]}]}',
     "list of strings"),
    ("textvqa", b'{"data": [{"question_id": true, "image_id": "a", "question": "q", "answers": ["x"]}]}',
     "'question_id' must be"),
]


@pytest.mark.parametrize("kind, source, wanted", CONVERT_CASES, ids=[f"{c[0]}-{i}" for i, c in
                                                                     enumerate(CONVERT_CASES)])  # fmt: skip
def test_every_malformed_convert_source_is_one_line(tmp_path, capsys, kind, source, wanted):
    (tmp_path / "images").mkdir()
    path = tmp_path / "source.json"
    path.write_bytes(source)
    code, _, err = cli(capsys, "convert", kind, path, "--images", tmp_path / "images", "--out", tmp_path / "o.jsonl")
    one_line(code, err, wanted)
    assert not (tmp_path / "o.jsonl").exists()


def test_convert_source_and_images_that_are_not_there(tmp_path, capsys):
    path = tmp_path / "source.json"
    path.write_text("{}")
    one_line(*cli(capsys, "convert", "gqa", tmp_path / "nope.json", "--images", tmp_path, "--out",
                  tmp_path / "o.jsonl")[::2], "not found")  # fmt: skip
    one_line(*cli(capsys, "convert", "gqa", path, "--images", tmp_path / "no-images", "--out",
                  tmp_path / "o.jsonl")[::2], "no such folder")  # fmt: skip


def test_cli_options_and_pipes(tmp_path, capsys, bundle):
    ask = ["run", bundle, "--image", PHOTO, "--prompt", "What?", "--max-new-tokens", "3", "--json"]
    code, out, _ = cli(capsys, *ask, "--temperature", "1e-320")
    greedy = json.loads(cli(capsys, *ask)[1])
    assert code == 0 and json.loads(out)["tokens"] == greedy["tokens"]  # a tiny temperature is greedy, not NaN
    one_line(*cli(capsys, "run", bundle, "--image", PHOTO, "--prompt", "what is \udcff?")[::2], "lone surrogate")
    (tmp_path / "a-file").write_text("x")
    one_line(*cli(capsys, "bench", "--out", tmp_path / "a-file" / "bench")[::2], "is a file, not a folder")
    one_line(*cli(capsys, "serve", bundle, "--port", "70000")[::2], "--port: must be a port number")
    one_line(*cli(capsys, "serve", bundle, "--allow-local-files", tmp_path / "nope")[::2], "no such folder")
    one_line(*cli(capsys, "plan", bundle, "--device", "l4", "--crops", "100")[::2], "takes 3..5 crops")
    one_line(*cli(capsys, "plan", bundle, "--device", "l4", "--context", "10000000")[::2], "holds at most")
    one_line(*cli(capsys, "run", bundle, "--image", PHOTO, "--prompt", "?", "--method", "fastervlm")[::2],
             "built with method adafv, not fastervlm")  # fmt: skip
    one_line(*cli(capsys, "run", bundle, "--image", PHOTO, "--prompt", "?", "--layout", "compact")[::2],
             "built with layout rows")  # fmt: skip


@pytest.mark.parametrize("reader", ["head -c 1", "true"])
def test_a_reader_that_leaves_early_ends_the_command_quietly(bundle, reader):
    flag = "--stream" if reader.startswith("head") else "--json"
    command = (f"{ADAFV} run {bundle} --image {PHOTO} --prompt 'What?' --max-new-tokens 20 {flag} --warmup off "
               f"2>err.txt | {reader} >/dev/null; cat err.txt")
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=Path(bundle).parent)
    assert "Traceback" not in proc.stdout and "BrokenPipe" not in proc.stdout, proc.stdout


def test_calib_report_against_another_models_bundle_is_one_line(capsys, make_bundle):
    int8 = make_bundle("toyworld-llava-next", 64, precision="int8").path
    other = make_bundle("tiny-llava-next", 64).path
    one_line(*cli(capsys, "calib", "report", int8, "--reference", other, "--repeats", "1")[::2],
             "not a bundle of the same model")  # fmt: skip


# ---- 11. smaller silent wrongs ---------------------------------------------------------------------------------------


def test_a_float_tiff_is_scaled_not_black(tmp_path):
    from adafv.runtime import ImageError, load_image

    ramp = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    Image.fromarray(ramp, mode="F").save(tmp_path / "unit.tiff")
    Image.fromarray(ramp * 4000, mode="F").save(tmp_path / "wide.tiff")
    for name in ("unit.tiff", "wide.tiff"):
        a = np.asarray(load_image(tmp_path / name))[..., 0]
        assert a.min() == 0 and a.max() == 255 and abs(int(a[24, 32]) - 128) <= 2, name
    nan = ramp.copy()
    nan[0, 0] = np.nan
    Image.fromarray(nan, mode="F").save(tmp_path / "nan.tiff")
    with pytest.raises(ImageError, match="NaN"):
        load_image(tmp_path / "nan.tiff")


def test_a_file_changed_after_load_is_refused(tmp_path, bundle):
    from adafv.runtime import BundleError, Pipeline, load_image

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    pipe = Pipeline.load(copy, warmup=False)
    table = np.load(copy / "embed.npy")
    np.save(copy / "embed.npy", np.zeros_like(table))  # rewritten in place before the first question
    with pytest.raises(BundleError, match="embed.npy changed since the bundle was loaded"):
        pipe.run(load_image(PHOTO), "What?", max_new_tokens=2)


# ---- 12. typed errors from the Python API ----------------------------------------------------------------------------


def test_the_python_api_raises_typed_errors(tmp_path, bundle):
    from adafv.runtime import BundleError, ImageError, Pipeline
    from adafv.runtime import manifest as bundle_format

    pipe = Pipeline.load(bundle, warmup=False)
    closed = Image.open(PHOTO)
    closed.close()
    with pytest.raises(ImageError, match="closed"):
        pipe.run(closed, "What?", max_new_tokens=2)
    la = Image.fromarray(np.full((40, 60, 2), 200, np.uint8), mode="LA").convert("La")
    assert pipe.run(la, "What?", max_new_tokens=2)["num_kept"] == 64  # premultiplied alpha: converted
    assert pipe.run(Image.open(PHOTO), "What?", max_new_tokens=2, temperature=1e-300, seed=1)["tokens"]
    for field, value, wanted in (("files", [], "files must list"), ("vision.crops", [3], "vision.crops")):
        broken = tmp_path / field
        shutil.copytree(bundle, broken)
        m = bundle_format.read_manifest(broken)
        section, *key = field.split(".")
        (m[section] if key else m).__setitem__(key[0] if key else section, value)
        bundle_format.write_manifest(broken, m, check=False)  # re-signed by hand
        with pytest.raises(BundleError, match=wanted):
            Pipeline.load(broken)
