"""ROS 2 deployment: the policy, safety, sim-robot and recorder lifecycle nodes, and ``r2s deploy``.

Torch-free: the nodes import rclpy, numpy, onnxruntime (policy), mujoco (sim robot only) and mcap/rosbags (recorder)
— never torch (``tests/ros`` proves it), so a robot image stays small. Importing this package imports nothing; each
node is its own module, run as ``python -m stack.ros.<node>`` or through its console script (``r2s-policy-node`` …).

The node graph (topic names and message types in ``stack.ros.topics``)::

    sim_robot_node (or a ros2_control robot) ──joint_states──► policy_node ──proposal──► safety_node
          ▲                                        ▲                                      │
          └──────── hardware command (forward controller / joint trajectory) ◄────────────┘
    teleop + authority request + e-stop ──► safety_node;   every topic above ──► recorder_node (rosbag2 MCAP)
"""
