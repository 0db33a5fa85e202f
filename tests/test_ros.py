"""adafv ros: camera messages converted by hand (no ROS needed), then the node in its own process over real rclpy
on loopback (localhost-only discovery, a domain of its own): its answer equals `adafv run BUNDLE --json`'s for the
same frame and question; a question before any frame, a bad frame, a stale frame, a fast camera, a full queue and
SIGINT behave as a robot needs."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from adafv.ros.frames import FrameError, from_compressed, from_raw

ROS = importlib.util.find_spec("rclpy") is not None
needs_ros = pytest.mark.skipif(not ROS, reason="rclpy is not installed (pip install 'adafv[ros]', x86-64 Linux)")
PROMPT = "What is in the picture?"


def pixels(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- frames -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad", [0, 3])
def test_raw_encodings_by_hand(pad):
    rgb = pixels()
    h, w, _ = rgb.shape

    def rows(a: np.ndarray) -> tuple[int, bytes]:
        a = a.reshape(h, -1)
        padded = np.concatenate([a, np.full((h, pad), 7, np.uint8)], axis=1)  # row padding the step skips
        return padded.shape[1], padded.tobytes()

    step, data = rows(rgb)
    assert np.array_equal(np.asarray(from_raw("rgb8", h, w, step, data)), rgb)
    step, data = rows(rgb[:, :, ::-1].copy())
    assert np.array_equal(np.asarray(from_raw("bgr8", h, w, step, data)), rgb)
    rgba = np.concatenate([rgb[:, :, ::-1], np.full((h, w, 1), 255, np.uint8)], axis=2)
    step, data = rows(rgba)
    assert np.array_equal(np.asarray(from_raw("bgra8", h, w, step, data)), rgb)
    step, data = rows(rgb[:, :, 0].copy())
    mono = np.asarray(from_raw("mono8", h, w, step, data))
    assert mono.shape == (h, w, 3) and np.array_equal(mono[:, :, 1], rgb[:, :, 0])


@pytest.mark.parametrize("args,message", [
    (("16UC1", 4, 4, 8, bytes(32)), "encoding '16UC1' is not supported"),
    (("rgb8", 4, 4, 12, bytes(40)), "40 bytes of data for 4 rows of step 12"),
    (("rgb8", 4, 4, 12, b""), "0 bytes of data"),
    (("rgb8", 4, 4, 8, bytes(32)), "step 8 is shorter than a row"),
    (("rgb8", 0, 4, 12, b""), "is not an image"),
    (("rgb8", 100_000, 100_000, 300_000, b""), "is not an image"),
])  # fmt: skip
def test_bad_raw_frames_are_one_line(args, message):
    with pytest.raises(FrameError, match=message):
        from_raw(*args)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "rgb8; jpeg compressed bgr8", ""])
def test_compressed_frames_decode(fmt):
    image = Image.fromarray(pixels())
    buf = io.BytesIO()
    image.save(buf, "PNG" if fmt == "png" else "JPEG", quality=95)
    got = from_compressed(fmt, buf.getvalue())
    assert got.mode == "RGB" and got.size == (64, 48)
    if fmt == "png":
        assert np.array_equal(np.asarray(got), pixels())


@pytest.mark.parametrize("fmt,data,message", [
    ("jpeg", b"", "no data"),
    ("jpeg", b"\xff\xd8\xff not a jpeg", "does not decode"),
    ("tiff", b"II*\x00", "'tiff' is not supported"),
])  # fmt: skip
def test_bad_compressed_frames_are_one_line(fmt, data, message):
    with pytest.raises(FrameError, match=message):
        from_compressed(fmt, data)


def test_without_rclpy_the_command_says_what_to_install(capsys, monkeypatch):
    from adafv.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rclpy" else real(name, *a))
    assert main(["ros", "some-bundle"]) == 2
    err = capsys.readouterr().err.strip()
    assert "adafv ros needs ROS 2's rclpy" in err and "adafv[ros]" in err and "\n" not in err


# -- the node over real ROS 2 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ros_domain():
    """This module's own DDS domain on loopback, for the test process and the node it starts."""
    saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                            "FASTDDS_DEFAULT_PROFILES_FILE")}  # fmt: skip
    os.environ["ROS_DOMAIN_ID"] = str(random.Random(os.getpid()).randint(1, 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    yield dict(os.environ)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class Camera:
    """The test's side: a ROS node that publishes frames and questions and collects results (spun on a thread).
    It is a camera process as docs/ros.md asks one to be: with adafv's Fast DDS profile for frames over 512 KB (the
    node, in its own process, runs with Fast DDS's defaults)."""

    def __init__(self):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage
        from sensor_msgs.msg import Image as ImageMsg
        from std_msgs.msg import String

        from adafv.ros import FASTDDS_PROFILE

        self.rclpy, self.String, self.ImageMsg, self.CompressedImage = rclpy, String, ImageMsg, CompressedImage
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)  # restored by ros_domain
        rclpy.init()
        self.node = rclpy.create_node("adafv_test_camera")
        self.images = self.node.create_publisher(ImageMsg, "image", qos_profile_sensor_data)
        self.compressed = self.node.create_publisher(CompressedImage, "image/compressed", qos_profile_sensor_data)
        self.questions = self.node.create_publisher(String, "question", QoSProfile(depth=10))
        self.results, self.answers, self.partials = [], [], []
        self.node.create_subscription(String, "answer/result", lambda m: self.results.append(json.loads(m.data)), 10)
        self.node.create_subscription(String, "answer", lambda m: self.answers.append(m.data), 10)
        self.node.create_subscription(String, "answer/partial", lambda m: self.partials.append(m.data), 100)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def frame(self, rgb: np.ndarray, stamp: float | None = None, encoding: str = "rgb8", data: bytes | None = None,
              publisher=None):  # fmt: skip
        msg = self.ImageMsg()
        t = time.time() if stamp is None else stamp
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
        msg.header.frame_id = "camera"
        msg.height, msg.width = rgb.shape[:2]
        msg.encoding, msg.step = encoding, rgb.shape[1] * 3
        msg.data = rgb.tobytes() if data is None else data
        (publisher or self.images).publish(msg)
        return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    def ask(self, question: str, timeout: float = 60.0, questions=None, results: list | None = None) -> dict:
        results = self.results if results is None else results
        before = len(results)
        (questions or self.questions).publish(self.String(data=question))
        deadline = time.time() + timeout
        while len(results) == before and time.time() < deadline:
            time.sleep(0.02)
        assert len(results) > before, f"no answer to {question!r} in {timeout} s"
        return results[before]

    def wait_for_node(self, timeout: float = 30.0, ns: str = "") -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.node.count_subscribers(f"{ns}question") and self.node.count_subscribers(f"{ns}image") and \
                    self.node.count_publishers(f"{ns}answer/result"):  # fmt: skip
                time.sleep(0.5)  # discovery of the other direction settles
                return
            time.sleep(0.1)
        raise AssertionError("the adafv node did not appear on loopback")

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown()


@pytest.fixture(scope="module")
def node(make_bundle, ros_domain):
    """`adafv ros BUNDLE` in its own process, as a user starts it."""
    if not ROS:
        pytest.skip("rclpy is not installed (pip install 'adafv[ros]', x86-64 Linux)")
    bundle = make_bundle("tiny-llava", 16).path
    proc = subprocess.Popen([sys.executable, "-m", "adafv.cli.main", "ros", str(bundle), "--ros-args",
                             "-p", "max_frame_age:=5.0", "-p", "queue_depth:=2", "-p", "max_new_tokens:=8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ros_domain)  # fmt: skip
    camera = Camera()
    try:
        camera.wait_for_node()
    except AssertionError:
        proc.kill()
        out, err = proc.communicate()
        camera.close()
        raise AssertionError(f"the node did not start: {err[-2000:]}") from None
    yield proc, camera, bundle
    camera.close()
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@needs_ros
def test_a_question_before_any_frame_is_answered_with_a_reason(node):
    proc, camera, _ = node
    r = camera.ask(PROMPT)
    assert r["error"].startswith("no camera frame yet on /image") and r["frame"] is None
    assert camera.answers[-1].startswith("error: no camera frame yet")
    assert proc.poll() is None


@needs_ros
def test_the_answer_is_adafv_runs_for_the_same_frame(node, tmp_path, capsys):
    from adafv.cli.main import main

    _, camera, bundle = node
    rgb = pixels(120, 160, seed=4)
    stamp = camera.frame(rgb)
    time.sleep(0.3)
    r = camera.ask(PROMPT)
    assert "error" not in r, r
    assert abs(r["frame"]["stamp"] - stamp) < 1e-6 and r["frame"]["frame_id"] == "camera"
    Image.fromarray(rgb).save(tmp_path / "frame.png")
    assert main(["run", str(bundle), "--image", str(tmp_path / "frame.png"), "--prompt", PROMPT,
                 "--max-new-tokens", "8", "--json"]) == 0  # fmt: skip
    want = json.loads(capsys.readouterr().out)
    got = r["answer"]
    assert got["tokens"] == want["tokens"] and got["kept_positions"] == want["kept_positions"]
    assert camera.answers[-1] == want["text"] == got["text"]
    deadline = time.time() + 5  # the partial text streams on its own topic: the last one is the whole answer
    while (not camera.partials or camera.partials[-1].strip() != want["text"]) and time.time() < deadline:
        time.sleep(0.05)
    assert camera.partials and camera.partials[-1].strip() == want["text"]


@needs_ros
@pytest.mark.parametrize("w,h", [(640, 480), (1280, 720)])
def test_a_camera_sized_frame_arrives_from_a_camera_with_adafvs_profile(node, w, h):
    """Frames over Fast DDS's 512 KB shared-memory segment (921,600 bytes at VGA rgb8): without the profile on the
    publishing side, none of them crossed processes over best-effort QoS here."""
    _, camera, _ = node
    stamp = camera.frame(pixels(h, w, seed=w))
    time.sleep(0.5)
    r = camera.ask(PROMPT)
    assert "error" not in r, r
    assert abs(r["frame"]["stamp"] - stamp) < 1e-6


@needs_ros
def test_a_reliable_image_subscription_takes_a_reliable_cameras_frames_only(node):
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    _, camera, bundle = node
    env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}  # Fast DDS's defaults
    proc = subprocess.Popen([sys.executable, "-m", "adafv.cli.main", "ros", str(bundle), "--ros-args", "-r",
                             "__ns:=/reliable", "-p", "image_reliability:=reliable", "-p", "max_new_tokens:=4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    n = camera.node
    best_effort = n.create_publisher(camera.ImageMsg, "/reliable/image", qos_profile_sensor_data)
    reliable = n.create_publisher(camera.ImageMsg, "/reliable/image", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE))  # fmt: skip
    questions = n.create_publisher(camera.String, "/reliable/question", QoSProfile(depth=10))
    results: list[dict] = []
    n.create_subscription(camera.String, "/reliable/answer/result", lambda m: results.append(json.loads(m.data)), 10)
    try:
        camera.wait_for_node(ns="/reliable/")
        camera.frame(pixels(96, 128, seed=11), publisher=best_effort)  # a best-effort camera does not match
        time.sleep(0.3)
        r = camera.ask(PROMPT, questions=questions, results=results)
        assert r["error"].startswith("no camera frame yet on /reliable/image"), r
        stamp = camera.frame(pixels(480, 640, seed=12), publisher=reliable)
        time.sleep(0.5)
        r = camera.ask(PROMPT, questions=questions, results=results)
        assert "error" not in r and abs(r["frame"]["stamp"] - stamp) < 1e-6, r
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]


@needs_ros
def test_a_bad_image_reliability_is_one_line(node):
    _, _, bundle = node
    proc = subprocess.run([sys.executable, "-m", "adafv.cli.main", "ros", str(bundle), "--ros-args", "-p",
                           "image_reliability:=sometimes"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "image_reliability must be best_effort or reliable, got 'sometimes'" in proc.stderr


def test_the_fastdds_profile_is_printed_and_is_a_large_segment(capsys):
    import xml.etree.ElementTree as ET

    from adafv.cli.main import main

    assert main(["ros", "--fastdds-profile"]) == 0
    path = capsys.readouterr().out.strip()
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(path).getroot()
    sizes = [int(e.text) for e in root.iterfind(".//d:transport_descriptor/d:segment_size", ns)]
    assert sizes and min(sizes) >= 1920 * 1080 * 3 * 4  # a few 1080p rgb8 frames, not Fast DDS's 512 KB


@needs_ros
def test_a_bad_frame_is_skipped_and_the_one_before_stays_the_latest(node):
    proc, camera, _ = node
    good = camera.frame(pixels(96, 128, seed=5))
    time.sleep(0.2)
    camera.frame(pixels(96, 128, seed=6), encoding="rgb8", data=b"\x00" * 10)  # wrong size
    camera.frame(pixels(96, 128, seed=7), encoding="32FC1")  # not a camera colour encoding
    time.sleep(0.3)
    r = camera.ask(PROMPT)
    assert "error" not in r and abs(r["frame"]["stamp"] - good) < 1e-6
    assert proc.poll() is None


@needs_ros
def test_a_fast_camera_never_queues_the_latest_frame_wins(node):
    _, camera, _ = node
    stamps = []
    for i in range(120):  # far faster than an answer
        stamps.append(camera.frame(pixels(96, 128, seed=100 + i), stamp=time.time() + i * 1e-3))
    time.sleep(0.5)
    r = camera.ask(PROMPT)
    assert "error" not in r and abs(r["frame"]["stamp"] - stamps[-1]) < 1e-6


@needs_ros
def test_a_stale_frame_is_refused_with_its_age(node):
    _, camera, _ = node
    camera.frame(pixels(96, 128, seed=8), stamp=time.time() - 60)
    time.sleep(0.3)
    r = camera.ask(PROMPT)
    assert "s old (max_frame_age 5.0 s)" in r["error"] and r["frame"] is not None


@needs_ros
def test_questions_beyond_the_queue_are_answered_busy_at_once(node):
    _, camera, _ = node
    camera.frame(pixels(96, 128, seed=9))
    time.sleep(0.3)
    before = len(camera.results)
    for _ in range(8):
        camera.questions.publish(camera.String(data=PROMPT))
    deadline = time.time() + 120
    while len(camera.results) < before + 8 and time.time() < deadline:
        time.sleep(0.05)
    got = camera.results[before:]
    assert len(got) == 8
    busy = [r for r in got if r.get("error", "").startswith("busy")]
    answered = [r for r in got if "answer" in r]
    assert busy and answered and len(busy) + len(answered) == 8


@needs_ros
def test_sigint_stops_the_node_cleanly(node):
    proc, _, _ = node
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
