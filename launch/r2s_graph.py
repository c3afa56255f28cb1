"""Shared by ``robot.launch.py`` and ``sim.launch.py``: the r2s nodes as ``launch_ros`` lifecycle nodes, brought up
one after another (configure → activate, then the next), so joint_states exist before the policy checks them.

The nodes are the console scripts of the ``r2s-stack`` package (``r2s-policy-node`` …, on ``PATH`` after
``pip install r2s-stack[ros]``): ``launch_ros`` runs an executable without a package from ``PATH``.
"""

import os

from launch.actions import EmitEvent, RegisterEventHandler
from launch.events import matches_action
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

HERE = os.path.dirname(os.path.abspath(__file__))

EXECUTABLES = {
    # node name (stack/ros/topics.py) -> console script
    "r2s_sim_robot": "r2s-sim-robot-node",
    "r2s_recorder": "r2s-recorder-node",
    "r2s_safety": "r2s-safety-node",
    "r2s_policy": "r2s-policy-node",
    "r2s_episodes": "r2s-episode-node",
}


def r2s_node(name, parameters):
    return LifecycleNode(executable=EXECUTABLES[name], name=name, namespace="", output="screen",
                         parameters=parameters)


def _change(node, transition_id):
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))


def bring_up_in_order(nodes):
    """Actions: the nodes, and the events that configure and activate each once the one before it is active."""
    actions = list(nodes)
    for node, following in zip(nodes, list(nodes[1:]) + [None]):
        actions.append(RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, goal_state="inactive",
            entities=[_change(node, Transition.TRANSITION_ACTIVATE)])))
        if following is not None:
            actions.append(RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, goal_state="active",
                entities=[_change(following, Transition.TRANSITION_CONFIGURE)])))
    actions.append(_change(nodes[0], Transition.TRANSITION_CONFIGURE))
    return actions
