# syntax=docker/dockerfile:1
# r2s training image: CUDA torch, MuJoCo rendering headless through EGL, the r2s-stack with its training extras.
#
#   docker build -f docker/train.Dockerfile -t r2s-train .          (context: the repository root)
#   docker run --rm --gpus all -v "$PWD/runs:/workspace/runs" r2s-train train --preset reach_ppo --device cuda
#
# torch: the standard PyPI build of torch==2.13.0, which on Linux x86_64 is the CUDA 13.0 build (its CUDA libraries
# come as pip packages), so the base image only needs to carry the driver hooks: the CUDA `base` flavour, matching
# CUDA major version. Python 3.11 (uv's managed CPython): the ROS 2 PyPI wheels of the `ros` extra are cp311 only.
# Extras: `dist` (Ray) and `ros` (rclpy wheels: this image is also the sim robot of docker/compose.yaml); add
# `genesis` with --build-arg EXTRAS="dist ros genesis". Every extra installs under a torch constraint, so no extra
# can replace the pinned torch.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.9.26

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE}
ARG PYTHON_VERSION=3.11
ARG TORCH_VERSION=2.13.0
ARG EXTRAS="dist ros"
ARG UID=1000

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

# EGL for MuJoCo: glvnd's libEGL dispatches to the NVIDIA driver's EGL (mounted by the NVIDIA container toolkit with
# the `graphics` capability; its vendor file written below) on a GPU host, or to Mesa's software EGL without one.
# DL3008 ignored (apt versions unpinned): the base image tag fixes the distro release, and pinning exact
# Debian/Ubuntu package versions breaks every rebuild once the archive moves on to a security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libegl1 libegl-mesa0 libgl1 libopengl0 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /usr/share/glvnd/egl_vendor.d \
    && printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}\n' \
        > /usr/share/glvnd/egl_vendor.d/10_nvidia.json
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl

# Python and the virtual environment (seeded with pip; root-owned: a derived image adds packages).
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --seed --python "${PYTHON_VERSION}" /opt/venv

WORKDIR /opt/r2s
# Dependencies first, from pyproject.toml alone: a source change rebuilds only the last layers, not torch.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/uv \
    echo "torch==${TORCH_VERSION}" > /opt/venv/torch-constraint.txt \
    && uv pip install -c /opt/venv/torch-constraint.txt "torch==${TORCH_VERSION}" \
    && set -- \
    && for extra in ${EXTRAS}; do set -- "$@" --extra "${extra}"; done \
    && uv pip install -c /opt/venv/torch-constraint.txt -r pyproject.toml "$@"

# The project itself, editable: the code resolves launch/ and the configs from this source tree, as in a checkout.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --no-deps -e . \
    && python -c "import torch, mujoco, stack.cli; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# Non-root user (uid 1000, as in the robot image: DDS shared-memory segments are then readable across containers).
RUN if id -u ubuntu > /dev/null 2>&1; then userdel --remove ubuntu; fi \
    && groupadd --gid "${UID}" r2s \
    && useradd --uid "${UID}" --gid "${UID}" --create-home --shell /bin/bash r2s \
    && mkdir -p /workspace \
    && chown r2s:r2s /workspace
USER ${UID}:${UID}
WORKDIR /workspace

ENTRYPOINT ["r2s"]
CMD ["--help"]
