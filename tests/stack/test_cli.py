"""The CLI skeleton: every command is listed, unfinished ones say so, and the light paths never import torch."""

import subprocess
import sys

import pytest

from stack import cli
from stack.config import EnvConfig, TrainConfig, from_dict


def run_py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command_without_importing_torch():
    r = run_py(
        "import sys; from stack import cli; cli.main(['--help']); "
        "assert 'torch' not in sys.modules, 'torch imported'; assert 'mujoco' not in sys.modules, 'mujoco imported'"
    )
    assert r.returncode == 0, r.stderr
    for command in ("demo", "train", "eval", "export", "deploy", "record", "replay", "sysid", "bench"):
        assert command in r.stdout


def test_robot_side_modules_do_not_import_torch():
    r = run_py(
        "import sys, stack, stack.cli, stack.config, stack.runs, robots, robots.spec; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"
    )
    assert r.returncode == 0, r.stderr


def test_unknown_command_is_refused(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_unknown_benchmark_is_refused(capsys):
    assert cli.main(["bench", "nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_python_dash_m_stack_runs():
    r = subprocess.run([sys.executable, "-m", "stack", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "r2s" in r.stdout


def test_config_from_dict_applies_nested_values_and_refuses_typos():
    cfg = from_dict(TrainConfig, {"env": {"task": "reach", "num_envs": 4}, "ppo": {"hidden": [32, 32]}})
    assert cfg.env == EnvConfig(task="reach", num_envs=4)
    assert cfg.ppo.hidden == (32, 32)
    with pytest.raises(ValueError, match="EnvConfig.tsak"):
        from_dict(TrainConfig, {"env": {"tsak": "reach"}})


def test_train_flags_override_preset(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("total_env_steps: 1234\nenv:\n  task: reach\n")
    cfg = cli.parse_train_config(["--preset", str(preset), "--seed", "7"], prog="r2s train")
    assert (cfg.total_env_steps, cfg.env.task, cfg.seed) == (1234, "reach", 7)


def test_a_bc_preset_is_one_train_config_with_a_bc_section():
    cfg = cli.parse_train_config(["--preset", "reach_bc", "--dataset", "x"], prog="r2s train")
    assert (cfg.algo, cfg.dataset, cfg.bc.action_key, cfg.bc.lr) == ("bc", "x", "action.proposal", 0.01)
    assert cli.parse_train_config(["--preset", "reach_ppo"], prog="r2s train").algo == "ppo"


def test_train_offers_only_algorithms_that_exist():
    import typing

    from stack.config import ALGOS
    from stack.runners import RUNNER_OF

    offered = typing.get_args(typing.get_type_hints(TrainConfig)["algo"])
    assert set(offered) == set(ALGOS) == set(RUNNER_OF)
    with pytest.raises(SystemExit):
        cli.parse_train_config(["--algo", "habc"], prog="r2s train")
