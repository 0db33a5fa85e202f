"""adafv's ROS 2 node (`adafv ros BUNDLE`): camera frames and questions in on topics, answers out, with the
torch-free runtime. `frames` converts ROS image messages without rclpy; `node` is the rclpy node (the `ros` extra:
`pip install "adafv[cpu,ros]"` on x86-64 Linux, or a ROS 2 install's rclpy, e.g. on a Jetson). docs/ros.md."""

from pathlib import Path

# Fast DDS profile for frames over 512 KB on one machine, for the camera's process (docs/ros.md, "Large frames")
FASTDDS_PROFILE = Path(__file__).with_name("fastdds_large_frames.xml")
