"""PPO on a fixed seed gives the same metrics as the run recorded before the runner-family restructuring.

``golden/ppo_hopper_metrics.csv`` was written by this test's ``_cfg`` (hopper, real MuJoCo physics, 3 iterations,
a checkpoint and two evaluations) on the code before ``stack/runners`` existed. Every column but the timing ones
must match to float32 precision: not bit for bit, because two CPUs of the same SIMD capability (AVX512) were seen to
order a reduction differently (policy_loss −0.0025103842 against −0.0025103856). Any change of behaviour (a skipped
epoch, another seed stream) moves the metrics far more than that. Regenerate only for a deliberate change of PPO's
behaviour.
"""

import csv
from pathlib import Path

import pytest
from stack.config import EnvConfig, PPOConfig, TrainConfig
from stack.runners import TIMING_KEYS
from stack.train import train

GOLDEN = Path(__file__).parent / "golden" / "ppo_hopper_metrics.csv"


def _cfg(tmp_path) -> TrainConfig:
    return TrainConfig(env=EnvConfig(task="hopper", num_envs=4, backend="sync"),
                       ppo=PPOConfig(rollout_steps=64, num_minibatches=4, update_epochs=2),
                       total_env_steps=3 * 256, eval_every=512, eval_episodes=2, checkpoint_every=512,
                       name="golden", runs_dir=str(tmp_path), progress=False, seed=3)


def _rows(path: Path) -> list[dict[str, float]]:
    with open(path) as f:
        return [{k: float(v) for k, v in r.items() if v != "" and k not in TIMING_KEYS} for r in csv.DictReader(f)]


def test_ppo_metrics_match_the_run_recorded_before_the_restructuring(tmp_path):
    got = _rows(train(_cfg(tmp_path)) / "metrics.csv")
    want = _rows(GOLDEN)
    assert [r.keys() for r in got] == [r.keys() for r in want]
    for g, w in zip(got, want):
        for key in w:
            assert g[key] == pytest.approx(w[key], rel=1e-4, abs=1e-6), (w["env_steps"], key, g[key], w[key])
