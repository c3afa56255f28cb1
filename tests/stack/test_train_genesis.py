"""Training on Genesis (``env.backend: genesis``): refusals before the run directory exists, a short PPO run, and
its exact resume (Genesis' CPU backend is deterministic: a resumed run logs the uninterrupted run's metrics).

The refusals run in any venv (the ones without Genesis need no Genesis; the missing-extra one runs where the extra is
absent, as in the main venv). The training run needs the ``genesis`` extra's own venv (``.venv-genesis``): it skips
without it, and is behind the ``genesis`` marker (Genesis' init ≈ 8 s and a hopper scene build ≈ 5–8 s with the
kernels cached in ``~/.cache/quadrants``; ≈ 35 s more on a cold cache). Run it with
``.venv-genesis/bin/python -m pytest -m genesis tests/stack/test_train_genesis.py``.
"""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest

from stack.config import EnvConfig, PPOConfig, TrainConfig
from stack.runners.base import check_env_backend

HAVE_GENESIS = importlib.util.find_spec("genesis") is not None
skip_no_genesis = pytest.mark.skipif(
    not HAVE_GENESIS, reason="genesis-world is not importable here (the `genesis` extra lives in its own venv, "
                             ".venv-genesis: see sim.genesis_pool.INSTALL_HINT)")

BATCH = 4 * 128  # num_envs × rollout_steps


def _cfg(tmp_path, **env) -> TrainConfig:
    return TrainConfig(algo="ppo", env=EnvConfig(**{"task": "hopper", "num_envs": 4, "backend": "genesis", **env}),
                       ppo=PPOConfig(rollout_steps=128, num_minibatches=4, update_epochs=2, hidden=(32, 32),
                                     anneal_lr=False),  # lr independent of the budget: a shorter part run, resumed
                       total_env_steps=4 * BATCH, eval_every=2 * BATCH, eval_episodes=2, checkpoint_every=2 * BATCH,
                       runs_dir=str(tmp_path), name="g", progress=False, tensorboard=False, seed=5)


# ---- refusals: before anything is built or written ----------------------------------------------------------------
@pytest.mark.skipif(HAVE_GENESIS, reason="genesis-world is installed here")
@pytest.mark.parametrize("extra", [[], ["--seeds", "1", "2"]], ids=["one_run", "seeds_group"])
def test_without_the_extra_r2s_train_exits_2_naming_the_field_and_writes_nothing(tmp_path, capsys, extra):
    from stack import cli

    runs = tmp_path / "runs"
    argv = ["train", "--preset", "hopper_ppo", "--env.backend", "genesis", "--runs-dir", str(runs), "--name", "g"]
    assert cli.main(argv + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("r2s train: env.backend='genesis': genesis-world is not importable"), err
    assert ".venv-genesis" in err and "make test-genesis" in err and "pip install -e '.[dev,genesis]'" in err
    assert not runs.exists()  # no run directory, no seeds group


@pytest.mark.parametrize("change, message", [
    ({"task": "push"}, r"env\.task: the Genesis backend has \['reach', 'hopper', .*\]; got 'push'"),
    ({"randomization": {"mass": [0.9, 1.1]}}, r"env\.randomization with env\.backend='genesis'.*expected \{\}"),
    ({"task_kwargs": {"render_mode": "rgb_array"}}, r"env\.task_kwargs\.render_mode"),
])
def test_what_genesis_lacks_is_refused_naming_the_field(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        check_env_backend(_cfg(tmp_path, **change))


def test_ray_workers_with_genesis_are_refused(tmp_path):
    import dataclasses

    with pytest.raises(ValueError, match=r"workers='ray' with env\.backend='genesis'.*expected workers='local'"):
        check_env_backend(dataclasses.replace(_cfg(tmp_path), workers="ray"))


def test_other_backends_pass_untouched(tmp_path):
    check_env_backend(_cfg(tmp_path, backend="sync", task="push", randomization={"mass": [0.9, 1.1]}))


# ---- a short PPO run on Genesis (CPU backend) ---------------------------------------------------------------------
def _rows(run) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def genesis_run(tmp_path_factory):
    """4 iterations of PPO on 4 Genesis hopper envs (2048 env steps), evaluated and checkpointed every 2."""
    from sim.genesis_pool import GenesisPool
    from stack.runners import runner_for

    runner = runner_for(_cfg(tmp_path_factory.mktemp("genesis")))
    assert isinstance(runner.envs, GenesisPool) and runner.envs.backend == "cpu"  # device cpu → Genesis' CPU backend
    return runner.learn()


@pytest.mark.genesis
@skip_no_genesis
def test_ppo_trains_on_genesis_and_evaluates_on_mujoco(genesis_run):
    from stack.evaluate import evaluate_run

    run = genesis_run
    assert run.name == "g"
    rows = _rows(run)
    assert [int(r["env_steps"]) for r in rows] == [BATCH, 2 * BATCH, 3 * BATCH, 4 * BATCH]
    # Genesis' hopper episodes: a random policy falls within tens of steps, so episodes finish in every rollout.
    assert all(float(r["episodes"]) > 0 and 1.0 < float(r["train_length"]) < 1000.0 for r in rows)
    assert rows[1]["eval_return"] and rows[3]["eval_return"] and not rows[0]["eval_return"]
    meta = json.loads((run / "checkpoints/latest/meta.json").read_text())
    assert meta["env_steps"] == 4 * BATCH and meta["iteration"] == 4
    assert (run / "checkpoints/latest/policy/model.safetensors").exists()
    assert "backend: genesis" in (run / "config.yaml").read_text()
    # Evaluation stays on MuJoCo: `r2s eval` (MuJoCo envs) reproduces the run's last eval_return exactly.
    result = evaluate_run(run)
    assert result["return_mean"] == pytest.approx(float(rows[-1]["eval_return"]), abs=1e-9)


@pytest.mark.genesis
@skip_no_genesis
def test_a_resumed_genesis_run_continues_as_the_uninterrupted_one(genesis_run, tmp_path):
    import dataclasses

    from stack.runners import TIMING_KEYS
    from stack.train import train

    part = train(dataclasses.replace(_cfg(tmp_path), total_env_steps=2 * BATCH))
    resumed = train(dataclasses.replace(_cfg(tmp_path), resume=str(part)))
    whole, rows = _rows(genesis_run), _rows(resumed)
    assert [r["env_steps"] for r in rows] == [r["env_steps"] for r in whole]
    for a, b in zip(whole, rows):
        for k in a.keys() - set(TIMING_KEYS):
            assert (a[k] == b[k]) or float(a[k]) == pytest.approx(float(b[k]), rel=1e-6, abs=1e-9), (a["env_steps"], k)
