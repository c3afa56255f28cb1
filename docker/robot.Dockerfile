# syntax=docker/dockerfile:1
# r2s robot image: ROS 2 (the distro's own rclpy and messages) + onnxruntime + stack.runtime + stack.ros. No torch,
# no simulator: docker/requirements-robot.txt is the whole Python side, the project goes in with --no-deps.
#
#   docker build -f docker/robot.Dockerfile -t r2s-robot .                          (context: the repository root)
#   docker run --rm --network host --ipc host -v "$PWD/runs/my_run:/policies:ro" -v "$PWD/bags:/bags" \
#       r2s-robot --policy /policies/policy.onnx
#
# The entrypoint is `r2s deploy` (recorder → safety → policy as lifecycle-driven processes, launch/<robot>.yaml
# parameters); the robot's own ros2_control bringup publishes joint_states and runs the controller the robot spec
# names. `ros2 launch /opt/r2s/launch/robot.launch.py policy:=...` (with --entrypoint /ros_entrypoint.sh) is the same
# graph through the ROS launch system. ROS_DISTRO: jazzy (LTS) by default; kilted matches the ROS 2 PyPI wheels
# of the training image (docker/compose.yaml builds this image with it).
ARG ROS_DISTRO=jazzy
FROM ros:${ROS_DISTRO}-ros-base
ARG UID=1000

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

# DL3008 ignored (apt versions unpinned): the base image tag fixes the distro release, and pinning exact
# Debian/Ubuntu package versions breaks every rebuild once the archive moves on to a security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*

# A venv over the system site-packages: rclpy and the message packages come from /opt/ros (PYTHONPATH, once ROS is
# sourced) and the distro's numpy, which ROS's C extensions were built against, stays the numpy imported: a
# constraint holds it at the system version so no requirement can upgrade it to an incompatible ABI.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv --system-site-packages /opt/venv \
    && python3 -c 'import numpy; print(f"numpy=={numpy.__version__}")' > /opt/venv/ros-constraints.txt

WORKDIR /opt/r2s
# Requirements first: a source change rebuilds only the last layers.
COPY docker/requirements-robot.txt docker/
RUN pip install --no-cache-dir -c /opt/venv/ros-constraints.txt -r docker/requirements-robot.txt

# The project without its (training) dependencies, editable: `r2s deploy` finds launch/<robot>.yaml in this tree.
# The build fails if torch got in, or if a node does not import against the distro's rclpy.
COPY . .
RUN pip install --no-cache-dir --no-deps -e . \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    && . "/opt/ros/${ROS_DISTRO}/setup.bash" \
    && python -c "import stack.runtime, stack.ros.policy_node, stack.ros.safety_node, stack.ros.recorder_node"

# Non-root user (uid 1000, as in the training image: DDS shared-memory segments are then readable across containers).
# Bags go to /bags (the recorder writes r2s_bag_<UTC time> in its working directory unless --bag says otherwise).
RUN if id -u ubuntu > /dev/null 2>&1; then userdel --remove ubuntu; fi \
    && groupadd --gid "${UID}" r2s \
    && useradd --uid "${UID}" --gid "${UID}" --create-home --shell /bin/bash r2s \
    && mkdir -p /bags /policies \
    && chown r2s:r2s /bags
USER ${UID}:${UID}
WORKDIR /bags

# /ros_entrypoint.sh (from the base image) sources /opt/ros/$ROS_DISTRO/setup.bash, then runs the command.
ENTRYPOINT ["/ros_entrypoint.sh", "r2s", "deploy"]
CMD ["--policy", "/policies/policy.onnx"]
