"""adafv's ROS 2 node (`adafv ros BUNDLE`): camera frames and questions in on topics, answers out, with the
torch-free runtime. `frames` converts ROS image messages without rclpy; `node` is the rclpy node (the `ros` extra:
`pip install "adafv[cpu,ros]"` on x86-64 Linux, or a ROS 2 install's rclpy, e.g. on a Jetson). docs/ros.md."""
