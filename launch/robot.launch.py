"""r2s on a real ros2_control robot: recorder → episodes → safety → policy (the robot bringup runs the controllers).

    ros2 launch launch/robot.launch.py policy:=/path/model.onnx [params:=launch/so101.yaml] [bag:=logs/run1]
        [home_between_episodes:=true]

The operator marks the episodes (``r2s_episodes``: ``/r2s/episode_event`` start | end | success | failure, the
``/r2s/episode/<mark>`` Trigger services, or ``python -m stack.ros.keyboard_operator``); the recorder stores them with
their outcomes. ``home_between_episodes:=true``: the safety node homes the arm along its limited path at each episode
end and holds it there until the next start (and before the first).

The robot's controller manager must already publish ``/joint_states`` and run the forward position controller the
robot spec names (``robots/<robot>.py``: ``command_topic``); the safety node is the only publisher on it.
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
    nodes = [
        r2s_node("r2s_recorder", [params, {"output_dir": LaunchConfiguration("bag")}]),
        r2s_node("r2s_episodes", [params]),
        r2s_node("r2s_safety", [params, {"home_between_episodes": ParameterValue(
            LaunchConfiguration("home_between_episodes"), value_type=bool)}]),
        r2s_node("r2s_policy", [params, {"policy_path": LaunchConfiguration("policy")}]),
    ]
    return LaunchDescription([
        DeclareLaunchArgument("policy", description="exported ONNX policy (r2s export)"),
        DeclareLaunchArgument("params", default_value=os.path.join(HERE, "so101.yaml"),
                              description="parameter YAML of the r2s nodes"),
        DeclareLaunchArgument("bag", default_value="", description="bag directory (empty: r2s_bag_<UTC time>)"),
        DeclareLaunchArgument("home_between_episodes", default_value="false",
                              description="home the arm at each episode end and hold until the operator's next start"),
        *bring_up_in_order(nodes),
    ])
