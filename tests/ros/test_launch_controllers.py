"""The ros2_control controller configuration shipped for the SO-101 (``launch/ros2_control/so101_controllers.yaml``):
it parses, names the robot spec's joints in the spec's order, and the joint_trajectory_controller alternative has a
command timeout (the forward controller has none: the file says so)."""

from pathlib import Path

import yaml

from robots.so101 import SO101

CONTROLLERS = Path(__file__).resolve().parents[2] / "launch" / "ros2_control" / "so101_controllers.yaml"


def test_controllers_name_the_spec_joints_in_order_and_the_trajectory_controller_times_out():
    config = yaml.safe_load(CONTROLLERS.read_text())
    manager = config["controller_manager"]["ros__parameters"]
    jtc = config["joint_trajectory_controller"]["ros__parameters"]
    forward = config["forward_position_controller"]["ros__parameters"]
    assert manager["joint_trajectory_controller"]["type"] == "joint_trajectory_controller/JointTrajectoryController"
    assert manager[SO101.controller_name]["type"] == "forward_command_controller/ForwardCommandController"
    # The controller names match the hardware topics the safety node publishes on (robots/so101.py).
    assert SO101.command_topic == f"/{SO101.controller_name}/commands"
    assert SO101.trajectory_topic == "/joint_trajectory_controller/joint_trajectory"
    assert tuple(jtc["joints"]) == SO101.joint_names
    assert tuple(forward["joints"]) == SO101.joint_names
    assert jtc["command_interfaces"] == ["position"]
    # ros2_control ignores cmd_timeout unless it exceeds goal_time.
    assert jtc["cmd_timeout"] > jtc["constraints"]["goal_time"] >= 0
    assert "no command timeout" in CONTROLLERS.read_text()
