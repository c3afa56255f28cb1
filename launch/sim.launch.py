"""r2s in the loop with the digital twin: sim robot → recorder → safety → policy.

    ros2 launch launch/sim.launch.py policy:=/path/model.onnx task:=reach [params:=launch/so101.yaml] [bag:=…]
        [robot_overlay:=/path/overlay.yaml]

The same graph as ``robot.launch.py`` with ``sim_robot_node`` standing in for the ros2_control robot (same topics).
``robot_overlay``: the sim robot's ``r2s sysid`` overlay (calibrated joint parameters, command delay); empty: the file
``R2S_ROBOT_OVERLAY`` names, if any. Unlike ``r2s deploy --sim`` a launch does not compare it with the policy's
training overlay: the sim robot node logs the overlay it loaded.
"""

import os
import sys

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.parameter_descriptions import ParameterValue

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from r2s_graph import HERE, bring_up_in_order, r2s_node  # noqa: E402


def generate_launch_description():
    params = LaunchConfiguration("params")
    task = LaunchConfiguration("task")
    nodes = [
        r2s_node("r2s_sim_robot", [params, {"task": task, "robot_overlay": ParameterValue(
            LaunchConfiguration("robot_overlay"), value_type=str)}]),
        r2s_node("r2s_recorder", [params, {"output_dir": LaunchConfiguration("bag"), "task": task}]),
        r2s_node("r2s_safety", [params]),
        r2s_node("r2s_policy", [params, {"policy_path": LaunchConfiguration("policy")}]),
    ]
    return LaunchDescription([
        DeclareLaunchArgument("policy", description="exported ONNX policy (r2s export)"),
        DeclareLaunchArgument("task", default_value="reach", description="task the sim robot simulates"),
        DeclareLaunchArgument("params", default_value=os.path.join(HERE, "so101.yaml"),
                              description="parameter YAML of the r2s nodes"),
        DeclareLaunchArgument("bag", default_value="", description="bag directory (empty: r2s_bag_<UTC time>)"),
        DeclareLaunchArgument("robot_overlay", default_value="",
                              description="the sim robot's overlay from r2s sysid (empty: the file R2S_ROBOT_OVERLAY "
                                          "names, if any)"),
        *bring_up_in_order(nodes),
    ])
