"""Agency transfer on the on-policy backbones (agency_ppo, agency_fpo, agency_dppo): the baseline's steps get no policy
gradient (PPO, FPO, DPPO) but train the critic, the V(s) certificate fires exactly when V(s) > V* + Δ, the stored
action is the executed one, the baseline is never called from the anneal fraction on, and a short zone run trains end
to end and exports the learner alone."""

import numpy as np
import pytest
import torch

from stack.algos.agency import AgencySchedule
from stack.algos.agency_on_policy import OnPolicyAgency
from stack.algos.on_policy import normalize_advantages
from stack.config import AgencyConfig, EnvConfig, PPOConfig, TrainConfig
from stack.rollout import RolloutStorage

OBS, ACT = 3, 2


def _raises(_obs):
    raise AssertionError("the baseline was called")


def _ppo(**ppo):
    from stack.algos.ppo import make_algo

    cfg = TrainConfig(algo="agency_ppo", ppo=PPOConfig(hidden=(8,), **ppo))
    torch.manual_seed(0)  # the same initial networks on every call
    return make_algo(cfg, OBS, ACT)


def _storage(T, N, authority=None, seed=0):
    """A rollout of random data (the PPO fields, returns and advantages filled), with an authority extra if given."""
    g = torch.Generator().manual_seed(seed)
    extras = {"log_probs": ()} if authority is None else {"log_probs": (), "authority": ()}
    s = RolloutStorage(T, N, OBS, ACT, extras_spec=extras)
    s.obs.copy_(torch.randn(T, N, OBS, generator=g))
    s.actions.copy_(torch.randn(T, N, 1, ACT, generator=g))
    s.extras["log_probs"].copy_(torch.randn(T, N, generator=g) - 2.0)
    s.advantages.copy_(torch.randn(T, N, generator=g))
    s.returns.copy_(torch.randn(T, N, generator=g) + 3.0)
    if authority is not None:
        s.extras["authority"].copy_(torch.as_tensor(authority, dtype=torch.float32).reshape(T, N))
    return s


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _critic_error(ppo, storage):
    with torch.no_grad():
        return float((ppo.critic(storage.obs.reshape(-1, OBS)) - storage.returns.reshape(-1)).pow(2).mean())


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_baseline_steps_give_the_actor_no_gradient_and_still_train_the_critic():
    ppo = _ppo(num_minibatches=2, update_epochs=2)
    storage = _storage(8, 2, authority=np.zeros(16))  # every step the baseline's
    actor, critic = _params(ppo.policy), _params(ppo.critic)
    err_before = _critic_error(ppo, storage)
    info = ppo.update(storage)
    assert _same(actor, _params(ppo.policy))  # an unmasked (or inverted) mask moves the actor
    assert not _same(critic, _params(ppo.critic))
    assert _critic_error(ppo, storage) < err_before
    assert info["policy_loss"] == 0.0 and info["approx_kl"] == 0.0
    learner = _ppo(num_minibatches=2, update_epochs=2)  # the same batch as the learner's: the actor moves
    learner.update(_storage(8, 2, authority=np.ones(16)))
    assert not _same(actor, _params(learner.policy))


def test_a_mixed_batch_moves_the_actor_as_its_learner_steps_alone_do():
    authority = np.tile([1.0, 0.0], 8)  # env 0 the learner's, env 1 the baseline's
    mixed = _storage(8, 2, authority=authority)
    alone = _storage(8, 1)
    for name in ("obs", "actions", "advantages", "returns", "values"):
        getattr(alone, name).copy_(getattr(mixed, name)[:, :1])
    alone.extras["log_probs"].copy_(mixed.extras["log_probs"][:, :1])
    one_step = {"num_minibatches": 1, "update_epochs": 1, "max_grad_norm": 1e9}  # no clip: the critic's norm differs
    a, b = _ppo(**one_step), _ppo(**one_step)
    a.update(mixed)
    b.update(alone)
    for x, y in zip(a.policy.parameters(), b.policy.parameters()):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def _fpo(**fpo):
    from stack.algos.fpo import make_algo
    from stack.config import FPOConfig

    cfg = TrainConfig(algo="agency_fpo", policy="flow", fpo=FPOConfig(hidden=(8,), critic_hidden=(8,), n_mc=2,
                                                                      euler_steps=2, **fpo))
    torch.manual_seed(0)
    return make_algo(cfg, OBS, ACT)


def _fpo_storage(fpo, T, N, authority=None):
    """A rollout whose FPO extras (x0, τ, ε) come from the flow's own act on random observations."""
    s = _storage(T, N, authority)
    s.executed.fill_(1)
    for t in range(T):
        _, extras, _ = fpo.act(s.obs[t])
        s.put_extras(t, extras)
    return s


def test_fpo_baseline_steps_give_the_flow_no_gradient_and_a_mixed_batch_is_its_learner_steps():
    fpo = _fpo(num_minibatches=2, update_epochs=2)
    flow, critic = _params(fpo.policy), _params(fpo.critic)
    fpo.update(_fpo_storage(fpo, 8, 2, authority=np.zeros(16)))
    assert _same(flow, _params(fpo.policy)) and not _same(critic, _params(fpo.critic))

    one_step = {"num_minibatches": 1, "update_epochs": 1}  # FPO: no grad-norm clip by default
    a, b = _fpo(**one_step), _fpo(**one_step)
    mixed = _fpo_storage(a, 8, 2, authority=np.tile([1.0, 0.0], 8))
    alone = RolloutStorage(8, 1, OBS, ACT)
    for name in ("obs", "actions", "advantages", "returns", "values", "executed"):
        getattr(alone, name).copy_(getattr(mixed, name)[:, :1])
    for name in ("x0", "tau", "eps"):
        alone.extras[name] = mixed.extras[name][:, :1].clone()
    a.update(mixed)
    b.update(alone)
    for x, y in zip(a.policy.parameters(), b.policy.parameters()):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def _dppo(seed=0, **dppo):
    from stack.algos.dppo import make_algo
    from stack.config import DPPOConfig

    d = DPPOConfig(**({"horizon": 1, "act_steps": 1, "denoising_steps": 4, "ft_denoising_steps": 2,
                       "actor_hidden": (16,), "critic_hidden": (8,), "batch_size": 10_000, "update_epochs": 1,
                       "target_kl": None} | dppo))
    torch.manual_seed(seed)
    return make_algo(TrainConfig(algo="agency_dppo", policy="diffusion", dppo=d), OBS, ACT)


def _dppo_storage(dppo, T, N, authority=None):
    """The fields DPPO's update reads, its denoising chains from its own act on random observations."""
    s = _storage(T, N, authority)
    chains = [dppo.act(s.obs[t])[1]["chains"] for t in range(T)]
    s.extras["chains"] = torch.stack(chains)
    return s


def test_dppo_baseline_decisions_give_the_denoiser_no_gradient_and_a_mixed_batch_is_its_learner_decisions():
    dppo = _dppo(update_epochs=2)
    ft, critic = _params(dppo.policy.ft_net), _params(dppo.critic)
    dppo.update(_dppo_storage(dppo, 8, 2, authority=np.zeros(16)))
    assert _same(ft, _params(dppo.policy.ft_net)) and not _same(critic, _params(dppo.critic))

    a, b = _dppo(), _dppo()  # one minibatch of every pair, one epoch: the same gradient step
    mixed = _dppo_storage(a, 8, 2, authority=np.tile([1.0, 0.0], 8))
    alone = RolloutStorage(8, 1, OBS, ACT)
    for name in ("obs", "actions", "advantages", "returns", "values", "rewards"):
        getattr(alone, name).copy_(getattr(mixed, name)[:, :1])
    alone.extras["chains"] = mixed.extras["chains"][:, :1].clone()
    a.update(mixed)
    b.update(alone)
    for x, y in zip(a.policy.ft_net.parameters(), b.policy.ft_net.parameters()):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def test_advantages_normalised_over_the_learner_steps():
    adv = torch.tensor([1.0, 100.0, 3.0, -50.0])
    mask = torch.tensor([True, False, True, False])
    out = normalize_advantages(adv, mask)
    std = float(torch.tensor([1.0, 3.0]).std())
    torch.testing.assert_close(out[mask], torch.tensor([-1.0, 1.0]) / std)


class _StubBackbone:
    """act → (zero proposals, log-probs, V = the observation's first entry): a hand-set critic value per step."""

    act_steps = 1

    def act(self, obs):
        n = obs.shape[0]
        return torch.zeros(n, 1, ACT), {"log_probs": torch.zeros(n)}, obs[:, 0].clone()


def _agency(num_envs=1, total=1000, p0=0.9):
    return OnPolicyAgency(_StubBackbone(), AgencySchedule(total, p0=p0), num_envs, delta=0.01)


def test_v_certificate_fires_exactly_when_v_beats_the_episode_best_by_delta():
    algo = _agency()
    algo.arbitrator.start_episodes(slice(None), 0.0)  # no relax: only certificates grant the learner
    baseline_calls = []

    def baseline(obs):
        baseline_calls.append(obs.copy())
        return np.full((len(obs), ACT), 0.25)

    got, executed = [], []
    for v in (1.0, 1.005, 1.02, 0.5, 1.031):
        obs = torch.tensor([[v, 0.0, 0.0]])
        chunk, extras, _ = algo.act_arbitrated(obs, np.array([[v, 7.0, 7.0]]), baseline, env_steps=0)
        got.append(bool(extras["authority"][0]))
        executed.append(float(chunk[0, 0, 0]))
    assert got == [True, False, True, False, True]  # V* = −inf → 1.0 → 1.02 → 1.031
    assert executed == [0.0, 0.25, 0.0, 0.25, 0.0]  # the stored action is the executed one
    assert [o[0, 0] for o in baseline_calls] == [1.005, 0.5]  # called with the raw observation of its rows
    assert algo.calls == {"baseline_rows": 2, "certified": 3, "decisions": 5}
    algo.after_decision(np.array([True]), np.array([1]))  # a new episode: V* = −inf again
    assert algo.arbitrator.q_star[0] == -np.inf and algo.lengths[0] == 0 and algo.env_steps == 1


def test_after_decision_feeds_the_schedule_the_episode_lengths():
    algo = _agency(num_envs=2)
    for _ in range(6):
        algo.after_decision(np.array([False, False]), np.array([1, 1]))
    algo.after_decision(np.array([True, False]), np.array([1, 1]))
    assert list(algo.schedule.lengths) == [7] and algo.lengths.tolist() == [0, 7] and algo.env_steps == 14


def test_no_baseline_call_from_the_anneal_fraction_on():
    algo = _agency(num_envs=2, total=100)
    algo.arbitrator.start_episodes(slice(None), 0.0)
    algo.arbitrator.q_star[:] = np.inf  # before the anneal fraction the baseline would act
    obs = torch.zeros(2, OBS)
    assert not algo.act_arbitrated(obs, np.zeros((2, OBS)), lambda o: np.zeros((len(o), ACT)), 89)[1]["authority"].any()
    _, extras, _ = algo.act_arbitrated(obs, np.zeros((2, OBS)), _raises, env_steps=90)  # f = 90 / (0.9 · 100) = 1
    assert extras["authority"].all()


def test_state_round_trips():
    a, b = _agency(num_envs=2), _agency(num_envs=2)
    a.backbone.state_dict = b.backbone.state_dict = lambda: {}
    a.backbone.load_state_dict = b.backbone.load_state_dict = lambda state: None
    a.after_decision(np.array([True, False]), np.array([5, 5]))
    a.act_arbitrated(torch.tensor([[0.3, 0, 0], [-0.2, 0, 0]]), np.zeros((2, OBS)), lambda o: np.zeros((len(o), ACT)),
                     5)
    b.load_state_dict(a.state_dict())
    assert b.schedule.state_dict() == a.schedule.state_dict() and b.calls == a.calls
    np.testing.assert_array_equal(b.arbitrator.q_star, a.arbitrator.q_star)
    np.testing.assert_array_equal(b.lengths, a.lengths)
    assert b.arbitrator.rng.random() == a.arbitrator.rng.random()


def test_zone_run_trains_without_baseline_past_the_anneal_fraction_and_exports_the_learner(tmp_path):
    from stack.runners import runner_for
    from stack.runners.arbitrated_on_policy import ArbitratedOnPolicyRunner

    total = 2048
    cfg = TrainConfig(
        algo="agency_ppo", env=EnvConfig(task="zone", num_envs=4, backend="sync", task_kwargs={"action_mode": "delta"}),
        ppo=PPOConfig(rollout_steps=128, num_minibatches=4, update_epochs=2, hidden=(16,)),
        agency=AgencyConfig(anneal_fraction=0.5), total_env_steps=total, eval_every=0, eval_episodes=2,
        checkpoint_every=total, runs_dir=str(tmp_path), name="agency_ppo", progress=False, tensorboard=False)
    runner = runner_for(cfg)
    assert isinstance(runner, ArbitratedOnPolicyRunner)
    inner, calls = runner.baseline, []

    def counted(obs):
        calls.append(runner.algo.env_steps)
        return inner(obs)

    runner.baseline = counted
    run_dir = runner.learn()
    assert calls and max(calls) < 0.5 * total  # never from the anneal fraction (1024 env steps) on
    assert runner.storage.extras["authority"].bool().all()  # the last rollout: the learner's alone
    import csv

    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["learner_share"]]
    assert float(rows[0]["learner_share"]) < 1.0 and float(rows[-1]["learner_share"]) == 1.0
    assert all(np.isfinite(float(r["value_loss"])) for r in rows) and int(rows[-1]["env_steps"]) == total

    from stack.export import export_run

    out = export_run(run_dir)
    assert out["parity_max_abs_err"] < 1e-4
    import onnxruntime as ort

    sess = ort.InferenceSession(out["path"])
    obs = np.stack([inner.task.reset(seed=s)[0] for s in range(3)]).astype(np.float32)
    got = sess.run(None, {sess.get_inputs()[0].name: obs[:, None]})[0].reshape(3, -1)
    delta = runner.controller(seed=0).act_batch(obs, np.arange(3))  # the learner alone, env (delta) units
    task = inner.task
    np.testing.assert_allclose(got, np.clip(obs[:, :6] + 0.1 * delta, task.joint_low, task.joint_high), atol=1e-4)


def _zone_cfg(tmp_path, name, total, **kw):
    return TrainConfig(
        algo="agency_ppo", env=EnvConfig(task="zone", num_envs=2, backend="sync", task_kwargs={"action_mode": "delta"}),
        ppo=PPOConfig(rollout_steps=64, num_minibatches=2, update_epochs=1, hidden=(8,)), total_env_steps=total,
        eval_every=0, eval_episodes=1, checkpoint_every=256, runs_dir=str(tmp_path), name=name, progress=False,
        tensorboard=False, **kw)


def _rows(run_dir):
    import csv

    from stack.runners import TIMING_KEYS

    with open(run_dir / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if v != "" and k not in TIMING_KEYS and not k.startswith("eval")}
                for r in csv.DictReader(f)]


def test_a_resumed_run_arbitrates_and_trains_as_the_uninterrupted_one(tmp_path):
    import shutil

    from stack.train import train

    whole = train(_zone_cfg(tmp_path, "whole", 512, keep_checkpoints=True))
    part = tmp_path / "part"  # the same run cut at its 256-step checkpoint (the schedule's budget stays 512)
    shutil.copytree(whole, part)
    shutil.rmtree(part / "checkpoints" / "latest")
    shutil.copytree(whole / "checkpoints" / "step_256", part / "checkpoints" / "latest")
    train(_zone_cfg(tmp_path, "ignored", 512, resume=str(part)))
    a, b = _rows(whole), _rows(part)
    assert [r["env_steps"] for r in b] == [128, 256, 384, 512]
    # The first rollout after the resume (384) arbitrates exactly as the uninterrupted run's: the same grants, episode
    # ends and schedule. (The update statistics are not compared: plain PPO's first update after such a resume
    # differs from the uninterrupted one by ~1e-4 relative too.)
    rollout_keys = ("learner_share", "certified_share", "p_ep", "lam", "anneal", "train_return", "episodes")
    for x, y in zip(a[:3], b[:3]):
        assert {k: x.get(k) for k in rollout_keys} == {k: y.get(k) for k in rollout_keys}, x["env_steps"]
    assert a[2]["learner_share"] < 1.0


def test_the_runner_refuses_a_task_without_baseline(tmp_path):
    from stack.runners import runner_for

    cfg = TrainConfig(algo="agency_ppo", env=EnvConfig(task="point_mass", num_envs=2, backend="sync"),
                      total_env_steps=64, runs_dir=str(tmp_path), progress=False, tensorboard=False)
    with pytest.raises(ValueError, match="baseline"):
        runner_for(cfg)
