"""`python -m adafv.ros.measure BUNDLE`: the node's overhead over the runtime, measured side by side in one run.

Starts `adafv ros BUNDLE` in its own process on a loopback-only DDS domain, publishes a camera frame (rgb8, this
process being the camera: with adafv's Fast DDS profile for large frames unless FASTDDS_DEFAULT_PROFILES_FILE is
set, as docs/ros.md says a camera over 512 KB a frame needs) and
asks the same question `--repeats` times, timing each from publishing the question to the result arriving; then
answers the same frame and question in this process with the runtime (`Pipeline.run`, what `adafv run BUNDLE`
does once its bundle is loaded). Prints one JSON object (medians in milliseconds) and checks the answers agree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time

import numpy as np


def measure(bundle: str, image: str, prompt: str, repeats: int, max_new_tokens: int) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image as ImageMsg
    from std_msgs.msg import String

    from adafv.ros import FASTDDS_PROFILE
    from adafv.runtime import Pipeline, load_image

    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    rgb = np.asarray(load_image(image))
    proc = subprocess.Popen([sys.executable, "-m", "adafv.cli.main", "ros", bundle, "--ros-args", "-p",
                             f"max_new_tokens:={max_new_tokens}", "-p", "max_frame_age:=0.0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE))  # the camera's side only
    rclpy.init()
    node = rclpy.create_node("adafv_measure")
    frames = node.create_publisher(ImageMsg, "image", qos_profile_sensor_data)
    questions = node.create_publisher(String, "question", QoSProfile(depth=10))
    arrived: list[tuple[float, dict]] = []
    node.create_subscription(String, "answer/result", lambda m: arrived.append((time.perf_counter(),
                                                                               json.loads(m.data))), 10)  # fmt: skip
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        deadline = time.time() + 120
        while not (node.count_subscribers("question") and node.count_subscribers("image")
                   and node.count_publishers("answer/result")):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the node did not start: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
            time.sleep(0.1)
        time.sleep(1.0)
        msg = ImageMsg(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3,
                       data=rgb.tobytes())  # fmt: skip
        for _ in range(3):  # best-effort QoS: a few copies, the node keeps the latest
            frames.publish(msg)
            time.sleep(0.1)
        time.sleep(0.5)
        ros_ms, results = [], []
        for i in range(repeats + 1):  # the first one unmeasured, as every bench here does
            before = len(arrived)
            sent = time.perf_counter()
            questions.publish(String(data=prompt))
            while len(arrived) == before:
                time.sleep(0.001)
            at, result = arrived[before]
            if "error" in result:
                raise RuntimeError(result["error"])
            if i:
                ros_ms.append((at - sent) * 1000)
                results.append(result)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        proc.send_signal(signal.SIGINT)  # the node's clean stop (tests/test_ros.py)
        proc.wait(timeout=60)
    pipe = Pipeline.load(bundle, warmup=True)
    from PIL import Image

    frame = Image.fromarray(rgb)
    runtime_ms, answers = [], []
    for i in range(repeats + 1):
        t = time.perf_counter()
        answers.append(pipe.run(frame, prompt, max_new_tokens))
        if i:
            runtime_ms.append((time.perf_counter() - t) * 1000)
    same = all(r["answer"]["tokens"] == answers[-1]["tokens"] for r in results)
    ros, runtime = statistics.median(ros_ms), statistics.median(runtime_ms)
    return {"bundle": bundle, "image": image, "size": [rgb.shape[1], rgb.shape[0]], "prompt": prompt,
            "repeats": repeats, "max_new_tokens": max_new_tokens, "tokens": len(answers[-1]["tokens"]),
            "ros_publish_to_answer_ms": round(ros, 1), "runtime_run_ms": round(runtime, 1),
            "overhead_ms": round(ros - runtime, 1), "node_reported_latency_ms": round(statistics.median(
                r["latency_ms"] for r in results), 1), "same_tokens": same}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adafv.ros.measure", description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--image", default=None, help="default: the packaged rocket photo")
    parser.add_argument("--prompt", default="What is in the picture?")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    image = args.image
    if image is None:
        from importlib import resources

        image = str(resources.files("adafv.assets") / "rocket.jpg")
    print(json.dumps(measure(args.bundle, image, args.prompt, args.repeats, args.max_new_tokens), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
