"""The arbitrated runner on the zone task: the buffer holds the executed action and who acted, the baseline is not
called from the anneal fraction on, residual RL composes with the baseline, and ``r2s export`` writes the learner
alone. A tiny real run (MuJoCo, torch), a few seconds."""

import numpy as np
import pytest

from stack.config import AgencyConfig, EnvConfig, SACConfig, TrainConfig


def _cfg(tmp_path, algo, total=240, anneal=0.5, **kwargs):
    kwargs = {"checkpoint_every": total, "name": algo, **kwargs}
    return TrainConfig(
        algo=algo, env=EnvConfig(task="zone", num_envs=2, backend="sync", task_kwargs={"action_mode": "delta"}),
        sac=SACConfig(hidden=(16,), batch_size=16, learning_starts=60, log_every=60),
        agency=AgencyConfig(anneal_fraction=anneal), total_env_steps=total, eval_every=0, eval_episodes=2,
        runs_dir=str(tmp_path), progress=False, tensorboard=False, **kwargs)


def test_a_resumed_agency_run_arbitrates_as_the_uninterrupted_one(tmp_path):
    import shutil

    from stack.runners import runner_for

    kw = {"anneal": 0.9, "checkpoint_every": 120}  # arbitrated until 216 env steps: after the cut too
    whole = runner_for(_cfg(tmp_path, "agency", name="whole", keep_checkpoints=True, **kw))
    whole_dir = whole.learn()
    part = tmp_path / "part"  # the same run cut at its 120-step checkpoint
    shutil.copytree(whole_dir, part)
    shutil.rmtree(part / "checkpoints" / "latest")
    shutil.copytree(whole_dir / "checkpoints" / "step_120", part / "checkpoints" / "latest")
    resumed = runner_for(_cfg(tmp_path, "agency", name="ignored", resume=str(part), **kw))
    resumed.learn()
    a, b = whole.buffer, resumed.buffer
    assert a.size == b.size == 240
    # who acted after the resume is what the uninterrupted run did, step for step, the baseline among them
    assert not a.authority[120:216].all()
    np.testing.assert_array_equal(a.authority[:240], b.authority[:240])
    np.testing.assert_allclose(a.actions[:240], b.actions[:240], atol=1e-6)


def test_agency_buffer_rule_and_no_baseline_after_the_anneal_fraction(tmp_path):
    from stack.runners import runner_for

    runner = runner_for(_cfg(tmp_path, "agency"))
    inner, calls = runner.baseline, []

    def counted(obs):
        calls.append(runner.steps)
        return inner(obs)

    runner.baseline = counted
    run_dir = runner.learn()
    buf = runner.buffer
    auth = buf.authority[: buf.size]
    assert buf.size == 240 and 0 < auth.sum() < buf.size  # both acted
    base_rows = np.flatnonzero(auth == 0)
    np.testing.assert_allclose(buf.actions[base_rows], inner(buf.obs[base_rows]), atol=1e-6)  # the executed action
    assert calls and max(calls) < 0.5 * 240  # never from the anneal fraction (120 env steps) on
    assert auth[120:].all()

    from stack.export import export_run

    out = export_run(run_dir)
    assert out["parity_max_abs_err"] < 1e-4
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(out["path"])
    obs = buf.obs[:3]
    feed = {sess.get_inputs()[0].name: obs.astype(np.float32)[:, None]}
    got = sess.run(None, feed)[0].reshape(3, -1)
    with torch.no_grad():  # the learner's deterministic action → absolute targets (q + 0.1·a): no baseline in it
        a = runner.algo.actor.act(torch.from_numpy(obs)[:, None], deterministic=True)[:, 0].numpy()
    task = inner.task
    expected = np.clip(obs[:, :6] + 0.1 * a, task.joint_low, task.joint_high)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_residual_executes_baseline_plus_scaled_learner(tmp_path):
    from stack.runners import runner_for

    runner = runner_for(_cfg(tmp_path, "residual", total=60))
    runner._reset_envs()
    env_actions, stored, extras = runner.step_actions()
    expected = np.clip(runner.baseline(runner.obs) + 0.5 * stored, -1.0, 1.0)
    np.testing.assert_allclose(env_actions, expected, atol=1e-6)  # delta task: policy units are env units
    assert extras == {}
    runner.envs.close()


def test_agency_refuses_a_task_without_baseline(tmp_path):
    from stack.runners import runner_for

    cfg = _cfg(tmp_path, "agency")
    cfg.env.task, cfg.env.task_kwargs = "point_mass", {}
    with pytest.raises(ValueError, match="baseline"):
        runner_for(cfg)
