"""FPO / FPO++: the CFM-loss ratio (exactly 1 at the first epoch, stored pairs reused, a lower loss a larger ratio),
the clipped and ASPO objectives' gradients, zero-sampling, and learning from scratch and from a BC-pretrained policy."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch

from policies import FlowPolicy
from stack.algos.fpo import (
    FPO,
    cfm_losses,
    clamp_ste,
    executed_mask,
    fpo_log_ratio,
    fpo_policy_loss,
    make_algo,
    resolve_options,
)
from stack.config import EnvConfig, FPOConfig, TrainConfig
from stack.normalize import ObsNormalizer, RewardScaler
from stack.rollout import ActionScaler, RolloutCollector, RolloutStorage

EPS = 0.05


def _grad(fn, ratios, adv):
    r = torch.tensor(ratios, requires_grad=True)
    fn(r, torch.tensor(adv)).backward()
    return r.grad.tolist()


# ---- the objective's gradients by hand ------------------------------------------------------------------------------
def test_clip_gradient_is_zero_outside_the_trust_region_for_positive_advantages():
    # Â = 2 > 0, n = 3: r = 1.1 > 1 + ε is clipped (no push further); 0.9 < 1 − ε and 1.02 inside are not.
    g = _grad(lambda r, a: fpo_policy_loss(r, a, EPS, "ppo"), [1.1, 0.9, 1.02], [2.0, 2.0, 2.0])
    assert g == pytest.approx([0.0, -2.0 / 3, -2.0 / 3])
    # ASPO keeps PPO-clip for Â ≥ 0: the same gradients.
    assert _grad(lambda r, a: fpo_policy_loss(r, a, EPS, "aspo"), [1.1, 0.9, 1.02], [2.0, 2.0, 2.0]) == \
        pytest.approx([0.0, -2.0 / 3, -2.0 / 3])


def test_aspo_pulls_the_ratio_back_for_negative_advantages_on_both_sides():
    # Â = −2: PPO-clip has no restoring force below 1 − ε (gradient 0 at r = 0.5) ...
    ppo = _grad(lambda r, a: fpo_policy_loss(r, a, EPS, "ppo"), [0.5, 1.5], [-2.0, -2.0])
    assert ppo[0] == 0.0 and ppo[1] > 0.0
    # ... SPO's does: dL/dρ = |Â|·(1 + (ρ − 1)/ε)/n → at 0.5: 2·(1 − 10)/2 = −9 (descent raises ρ), at 1.5: +11.
    aspo = _grad(lambda r, a: fpo_policy_loss(r, a, EPS, "aspo"), [0.5, 1.5], [-2.0, -2.0])
    assert aspo == pytest.approx([-9.0, 11.0])
    # and its gradient vanishes at ρ = 1 − ε (the SPO optimum)
    assert _grad(lambda r, a: fpo_policy_loss(r, a, EPS, "aspo"), [1.0 - EPS], [-2.0]) == pytest.approx([0.0], abs=1e-5)


def test_ratio_from_losses_by_hand_and_the_fpo_plus_plus_clamps():
    old = torch.tensor([[1.0, 3.0]])
    new = torch.tensor([[0.5, 3.5]])
    # FPO: one ratio from the means: exp(2 − 2) = 1; FPO++: per sample exp(0.5), exp(−0.5)
    assert fpo_log_ratio(old, new, False, None, None).tolist() == [[0.0]]
    assert fpo_log_ratio(old, new, True, None, None).tolist() == [[0.5, -0.5]]
    # FPO++ clamps only ℓ_old (at 4): ℓ_old 5, ℓ_θ 6 → exp(4 − 6) = 0.135 < 1, which pulls ℓ_θ back
    new = torch.tensor([[6.0]], requires_grad=True)
    lr = fpo_log_ratio(torch.tensor([[5.0]]), new, True, 4.0, 5.0)
    assert lr.exp().item() == pytest.approx(0.1353, abs=1e-4)
    lr.sum().backward()
    assert new.grad.item() == -1.0
    # ... and one far off has its log-ratio clamped at −5, straight-through (its gradient kept)
    new = torch.tensor([[12.0]], requires_grad=True)
    lr = fpo_log_ratio(torch.tensor([[10.0]]), new, True, 4.0, 5.0)
    lr.sum().backward()
    assert lr.item() == -5.0 and new.grad.item() == -1.0
    # log-ratio clamped at ±5
    assert fpo_log_ratio(torch.tensor([[9.0]]), torch.tensor([[1.0]]), True, None, 5.0).item() == 5.0
    x = torch.tensor([7.0], requires_grad=True)
    y = clamp_ste(x, -5.0, 5.0)
    y.backward()
    assert y.item() == 5.0 and x.grad.item() == 1.0


def test_variant_defaults():
    assert resolve_options(FPOConfig()) == {"per_sample_ratio": False, "trust_region": "ppo", "loss_clamp": None,
                                            "log_ratio_clamp": None}
    assert resolve_options(FPOConfig(variant="fpo++")) == {"per_sample_ratio": True, "trust_region": "aspo",
                                                           "loss_clamp": 4.0, "log_ratio_clamp": 5.0}
    assert resolve_options(FPOConfig(variant="fpo++", trust_region="ppo", loss_clamp=0))["loss_clamp"] is None


@pytest.mark.parametrize("mode", ["epsilon", "velocity"])
def test_per_position_losses_are_the_policy_cfm_loss(mode):
    torch.manual_seed(0)
    p = FlowPolicy(3, 2, horizon=4, act_steps=4, hidden=(32, 32))
    obs, a = torch.randn(5, 3), torch.randn(5, 4, 2)
    tau, eps = torch.rand(5, 6), torch.randn(5, 6, 4, 2)
    per_pos = cfm_losses(p, obs, a, tau, eps, mode)  # [B, N, H], mean over action dims
    torch.testing.assert_close(per_pos.sum(-1) * 2, p.cfm_loss(obs, a, tau, eps, mode=mode))
    # a chunk cut short by an episode's end counts only the executed positions
    mask = executed_mask(torch.tensor([4, 2, 1, 4, 3]), 4)
    assert mask[1, 0].tolist() == [1.0, 1.0, 0.0, 0.0]


# ---- one real rollout and update ------------------------------------------------------------------------------------
def _rollout(variant="fpo", seed=0, act_steps=1, horizon=1, **kw):
    from sim.pool import make_pool

    torch.manual_seed(seed)
    envs = make_pool("point_mass", 4, backend="sync", seed=seed)
    cfg = TrainConfig(algo="fpo", seed=seed, fpo=FPOConfig(variant=variant, rollout_steps=16, num_minibatches=4,
                                                           update_epochs=3, critic_hidden=(32, 32), horizon=horizon,
                                                           act_steps=act_steps, lr=1e-3, **kw))
    algo = make_algo(cfg, 4, 2)
    collector = RolloutCollector(envs, ObsNormalizer(4), RewardScaler(4, 0.99),
                                 ActionScaler.for_space(envs.single_action_space))
    storage = RolloutStorage(16, 4, 4, 2, horizon=algo.act_steps, extras_spec=algo.extras_spec())
    collector.reset(seed=seed)
    collector.collect(algo, storage)
    envs.close()
    algo.compute_returns(storage)
    return algo, storage


def _batch(storage):
    keys = ("obs", "x0", "tau", "eps", "executed", "advantages", "values", "returns")
    return {k: v for k, v in storage.flat().items() if k in keys}


@pytest.mark.parametrize("variant", ["fpo", "fpo++"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_ratios_are_exactly_one_at_the_first_epoch(variant, chunk):
    algo, storage = _rollout(variant, act_steps=chunk, horizon=chunk)
    # the raw (pre-clip) sample is stored: the clipped env action would give another CFM loss
    assert storage.extras["x0"].abs().max() > 1.0
    b = _batch(storage)
    mask = executed_mask(b["executed"], b["x0"].shape[1])
    with torch.no_grad():
        new = algo.chunk_losses(b["obs"], b["x0"], b["tau"], b["eps"], b["executed"])
        old = algo.old_losses(b)  # the batched ℓ_old pass of ``update``
        per_pos = cfm_losses(algo.policy, b["obs"], b["x0"], b["tau"], b["eps"], algo.cfg.loss_mode) * mask
    clamp = algo.opts["loss_clamp"]
    free = (per_pos <= clamp).all(-1) if clamp else torch.ones_like(new, dtype=torch.bool)
    torch.testing.assert_close(new[free], old[free], rtol=0, atol=1e-6)
    if clamp:  # FPO++: a sample whose ℓ_old was clamped starts below ratio 1 (ℓ_θ is never clamped)
        assert bool((old[~free] < new[~free]).all())
    info = algo.update(storage)
    if not clamp or bool(free.all()):
        assert info["first_ratio_dev"] < 1e-5
    assert info["max_ratio_dev"] > 1e-3  # later minibatches did move the policy


def test_stored_pairs_are_reused_across_epochs():
    algo, storage = _rollout("fpo++")
    b = _batch(storage)
    first, _ = algo.minibatch_loss(b)
    again, _ = algo.minibatch_loss(b)
    assert first.item() == again.item()  # deterministic given the batch: no pair is redrawn
    state = algo.pair_generator.get_state()
    algo.update(storage)
    assert torch.equal(algo.pair_generator.get_state(), state)  # the update draws no new (τ, ε)
    # the loss does depend on the pairs (so the check above could fail)
    redrawn = dict(b, eps=torch.randn_like(b["eps"]))
    assert algo.minibatch_loss(redrawn)[0].item() != first.item()


@pytest.mark.parametrize("per_sample", [False, True])
def test_lowering_a_samples_cfm_loss_raises_its_ratio(per_sample):
    algo, storage = _rollout()
    b = _batch(storage)
    j = 5
    loss_old = algo.old_losses(b)
    # a few gradient steps on decision j's own CFM loss (its stored pairs) only
    opt = torch.optim.SGD(algo.policy.parameters(), lr=0.05)
    for _ in range(5):
        lj = algo.chunk_losses(b["obs"][j:j + 1], b["x0"][j:j + 1], b["tau"][j:j + 1], b["eps"][j:j + 1],
                               b["executed"][j:j + 1]).mean()
        opt.zero_grad()
        lj.backward()
        opt.step()
    with torch.no_grad():
        loss_new = algo.chunk_losses(b["obs"], b["x0"], b["tau"], b["eps"], b["executed"])
    ratio = fpo_log_ratio(loss_old, loss_new, per_sample, None, None).exp()
    assert loss_new[j].mean() < loss_old[j].mean()
    assert ratio[j].mean() > 1.0 + 1e-3


def test_zero_sampling_is_deterministic_and_random_noise_is_not():
    algo, storage = _rollout()
    obs = storage.obs[0]
    zero = algo.eval_sampling()
    assert zero["zero_noise"] is True
    a1, a2 = (algo.policy.sample(obs, zero_noise=True, steps=zero["steps"]) for _ in range(2))
    assert torch.equal(a1, a2)
    torch.testing.assert_close(a1, algo.policy.sample(obs, noise=torch.zeros(4, 1, 2)))
    s1, s2 = algo.act(obs)[0], algo.act(obs)[0]
    assert not torch.equal(s1, s2)


# ---- learning -------------------------------------------------------------------------------------------------------
def _learn(tmp_path, name, steps, fpo: FPOConfig, init_from=None, seed=3):
    from stack.train import train

    cfg = TrainConfig(algo="fpo", env=EnvConfig(task="point_mass", num_envs=8, backend="sync"), fpo=fpo,
                      init_from=init_from, total_env_steps=steps, eval_every=0, eval_episodes=10,
                      checkpoint_every=0, name=name, runs_dir=str(tmp_path), progress=False, seed=seed)
    run = train(cfg)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    return float(rows[0]["train_return"]), float(rows[-1]["eval_return"]), run


def test_fpo_learns_the_point_mass_from_scratch(tmp_path):
    # Random actions score ≈ 2 over 50 steps, a PD controller ≈ 44. ~15 s: 8k env steps, 4×32 flow MLP.
    fpo = FPOConfig(rollout_steps=64, num_minibatches=8, update_epochs=10, critic_hidden=(64, 64), lr=1e-3)
    first, final, _ = _learn(tmp_path, "scratch", 8192, fpo)
    assert first < 10.0
    assert final > 30.0 and final > first + 20.0


def _biased_demos(root, episodes=40, seed=0):
    """Point-mass demonstrations of a PD controller aimed at (0.4, 0.4) instead of the origin, with action noise:
    a deliberately weak demonstrator (≈ 20 where the origin's PD scores ≈ 44) whose spread gives FPO exploration."""
    from sim.tasks.point_mass import PointMassTask
    from stack.data import EpisodeWriter

    env, rng = PointMassTask(), np.random.default_rng(seed)
    writer = EpisodeWriter.for_task(root, "point_mass", env)
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            a = np.clip(-4.0 * (obs[:2] - 0.4) - 3.0 * obs[2:] + rng.normal(0, 0.5, 2), -2, 2)
            nxt, r, term, trunc, info = env.step(a)
            writer.add_step(obs, a, r, terminated=term, truncated=trunc, success=info["success"])
            obs, done = nxt, term or trunc
        writer.end_episode()
    return writer.close()


def test_fpo_improves_a_bc_pretrained_flow_policy(tmp_path):
    from stack import checkpoint
    from stack.config import BCConfig
    from stack.controller import PolicyController
    from stack.evaluate import evaluate
    from stack.runners import eval_seed
    from stack.train import train

    demos = _biased_demos(tmp_path / "demos")
    bc = train(TrainConfig(algo="bc", policy="flow", dataset=str(demos), eval_episodes=0, progress=False,
                           tensorboard=False, runs_dir=str(tmp_path), name="bc", seed=1,
                           bc=BCConfig(horizon=2, act_steps=2, grad_steps=600, batch_size=256,
                                       policy_kwargs={"hidden": (64, 64), "euler_steps": 10})))
    seed = eval_seed(3)  # the fine-tuning run's evaluation seeds
    before = evaluate(PolicyController.from_checkpoint(bc, seed=seed), "point_mass", 10, seed)["return_mean"]
    fpo = FPOConfig(rollout_steps=32, num_minibatches=4, update_epochs=10, critic_hidden=(64, 64), lr=1e-3,
                    critic_lr=1e-3)
    _, after, run = _learn(tmp_path, "finetune", 16_384, fpo, init_from=str(bc))
    assert 10.0 < before < 30.0  # weak, but not hopeless
    print(f"BC {before:.1f} → FPO {after:.1f}")
    assert after > before + 10.0
    # fine-tuning kept the BC observation statistics (frozen) and action scaling
    ft, pre = checkpoint.load(run).normalization, checkpoint.load(bc).normalization
    assert ft["obs"] == pre["obs"] and ft["action"] == pre["action"]
    # the fine-tuned run loads as a chunk-executing, zero-sampling policy that replays its final evaluation
    policy = PolicyController.from_checkpoint(run)
    assert policy.act_steps == 2 and policy.sampling["zero_noise"] is True
    assert evaluate(policy, "point_mass", 10, seed)["return_mean"] == after


def test_make_algo_from_scratch_builds_the_paper_networks():
    algo = make_algo(TrainConfig(algo="fpo"), 17, 6)
    assert isinstance(algo, FPO)
    widths = [m.out_features for m in algo.policy.net.trunk if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 32, 32, 32, 6]
    assert algo.act_steps == 1 and algo.policy.euler_steps == 10 and algo.cfg.n_mc == 8 and algo.cfg.clip_coef == 0.05
    critic_widths = [m.out_features for m in algo.critic.net if isinstance(m, torch.nn.Linear)]
    assert critic_widths == [256] * 5 + [1]
    with pytest.raises(TypeError, match="flow policy"):
        make_algo(dataclasses.replace(TrainConfig(algo="fpo")), 4, 2, pretrained=torch.nn.Linear(2, 2))


# ---- the flow's output and noise scales: every forward pass, the checkpoint, the ONNX graph -------------------------
def test_output_scale_multiplies_every_forward_pass_and_noise_scale_the_source():
    torch.manual_seed(0)
    plain = FlowPolicy(3, 2, horizon=2, act_steps=2, hidden=(16, 16), euler_steps=4)
    scaled = FlowPolicy(3, 2, horizon=2, act_steps=2, hidden=(16, 16), euler_steps=4, output_scale=0.25,
                        noise_scale=0.4)
    scaled.load_state_dict(plain.state_dict())  # the same weights: only the scales differ
    obs, x = torch.randn(5, 3), torch.randn(5, 2, 2)
    tau = torch.rand(5)
    torch.testing.assert_close(scaled.velocity(x, tau, obs), 0.25 * plain.velocity(x, tau, obs))
    # sampling: the ODE runs in z = a/σ from the given N(0, I) noise, the action is σ·z
    with torch.no_grad():
        _, raw = scaled.sample(obs, noise=x, return_presquash=True)
    z = x.clone()
    for k in range(4):
        z = z - 0.25 * 0.25 * plain.velocity(z, 1.0 - k * 0.25, obs)
    torch.testing.assert_close(raw, 0.4 * z)
    # the CFM loss is that of z = a/σ
    a, eps = torch.randn(5, 2, 2), torch.randn(5, 2, 2)
    expect = ((tau.view(-1, 1, 1) * eps + (1 - tau.view(-1, 1, 1)) * a / 0.4) + (1 - tau.view(-1, 1, 1))
              * scaled.velocity(tau.view(-1, 1, 1) * eps + (1 - tau.view(-1, 1, 1)) * a / 0.4, tau, obs)
              - eps).pow(2).sum((-1, -2))
    torch.testing.assert_close(scaled.cfm_loss(obs, a, tau, eps, mode="epsilon"), expect)


def test_a_fresh_flow_starts_at_its_noise_scale():
    """The fair-start setting: a fresh FPO flow's action std ≈ noise_scale (output ×0.25 keeps it near its noise)."""
    torch.manual_seed(0)
    policy = make_algo(TrainConfig(algo="fpo", fpo=FPOConfig(noise_scale=0.37)), 12, 6).policy
    with torch.no_grad():
        a = policy.sample(torch.randn(4000, 12))
    assert float(a.std()) == pytest.approx(0.37, rel=0.1)
    assert policy.output_scale == 0.25


def test_checkpoints_without_the_scales_load_unchanged(tmp_path):
    """A checkpoint written before the scales existed (its config lacks them; its init-scaled weights carry the old
    0.25) loads with both at 1 and acts exactly as saved."""
    import json

    from policies.common import CONFIG_FILE, load_policy, save_policy

    torch.manual_seed(0)
    policy = FlowPolicy(3, 2, horizon=1, act_steps=1, hidden=(16, 16), euler_steps=3)
    save_policy(policy, tmp_path)
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    del cfg["kwargs"]["output_scale"], cfg["kwargs"]["noise_scale"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(cfg))
    loaded = load_policy(tmp_path)
    assert (loaded.output_scale, loaded.noise_scale) == (1.0, 1.0)
    obs = torch.randn(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.act(obs, zero_noise=True), policy.act(obs, zero_noise=True))


def test_the_scales_reach_the_onnx_graph(tmp_path):
    from stack.export import ExportSpec, export_policy
    from tests.stack.test_export import META

    torch.manual_seed(0)
    policy = FlowPolicy(5, 2, horizon=4, act_steps=2, hidden=(32, 32), euler_steps=5, output_scale=0.25,
                        noise_scale=0.37)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    rng = np.random.default_rng(1)
    spec = ExportSpec(rng.normal(size=5), rng.uniform(0.5, 2.0, 5), 5.0, np.array([-1.0, -0.5]), np.array([1.0, 0.5]),
                      "minmax")
    result = export_policy(policy, spec, tmp_path / "p.onnx", META)  # raises unless ONNX matches torch
    assert result["parity_max_abs_err"] <= 1e-5


# ---- bench fpo: the fair comparison and its curves ------------------------------------------------------------------
def test_bench_flows_get_ppos_critic_and_starting_action_std(tmp_path):
    import math

    from stack.bench.fpo import method_config, start_action_stats

    ppo = method_config("ppo", "reach", 1024, 1, str(tmp_path), "cpu", 1)
    for method in ("fpo", "fpo++"):
        cfg = method_config(method, "reach", 1024, 1, str(tmp_path), "cpu", 1)
        assert cfg.fpo.variant == method
        assert cfg.fpo.critic_hidden == tuple(ppo.ppo.hidden) and cfg.fpo.critic_activation == "tanh"
        assert cfg.fpo.noise_scale == pytest.approx(math.exp(ppo.ppo.log_std_init), abs=1e-4)
    flow, gauss = start_action_stats(cfg, states=16, samples=16), start_action_stats(ppo, states=16, samples=16)
    assert flow["start_std"] == pytest.approx(gauss["start_std"], rel=0.1)
    assert flow["start_at_limits"] < 0.05 and gauss["start_at_limits"] < 0.05


def test_bench_writes_learning_curves_against_env_steps_and_wall_clock(tmp_path):
    from stack.bench.fpo import write_curves

    per_seed = [{"seed": s, "fpo_curve": [[100, 1.0, -5.0], [200, 2.0, -4.0]],
                 "fpo_pp_curve": [[100, 1.1, -5.5], [200, 2.2, -3.0]],
                 "ppo_curve": [[100, 0.5, -6.0], [200, 1.0, -2.0]]} for s in (1, 2)]
    out = write_curves([{"task": "reach", "per_seed": per_seed}], tmp_path / "curves")
    rows = list(csv.reader(open(out["csv"])))
    assert rows[0] == ["task", "method", "seed", "env_steps", "train_s", "eval_return"]
    assert len(rows) == 1 + 2 * 3 * 2 and {r[1] for r in rows[1:]} == {"fpo", "fpo++", "ppo"}
    assert (tmp_path / "curves" / "curves_reach.png").stat().st_size > 0


def test_resuming_a_run_from_before_the_forward_pass_output_scale_is_refused_with_the_fix():
    from stack.checkpoint import CheckpointError

    algo = make_algo(TrainConfig(algo="fpo", fpo=FPOConfig(hidden=(8, 8), critic_hidden=(8,))), 4, 2)
    state = algo.state_dict()
    algo.load_state_dict(state)  # the same scales: fine
    old = {k: v for k, v in state.items() if k != "flow_scales"}  # a trainer state written before the scales
    with pytest.raises(CheckpointError, match="output-scale 1"):
        algo.load_state_dict(old)
    legacy = make_algo(TrainConfig(algo="fpo", fpo=FPOConfig(hidden=(8, 8), critic_hidden=(8,), output_scale=1.0)),
                       4, 2)
    legacy.load_state_dict({**old, **{k: v for k, v in legacy.state_dict().items() if k != "flow_scales"}})


def test_critic_warmup_iterations_move_the_critic_only_then_the_flow():
    algo, storage = _rollout("fpo++", n_critic_warmup_itr=1, critic_warmup_epochs=4)
    flow = [p.detach().clone() for p in algo.policy.parameters()]
    critic = [p.detach().clone() for p in algo.critic.parameters()]
    info = algo.update(storage)
    assert info["critic_warmup"] == 1.0 and algo.updates == 1
    assert info["explained_variance_after"] > info["explained_variance"]  # V was fitted to the rollout's returns
    assert all(torch.equal(a, b) for a, b in zip(flow, algo.policy.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(critic, algo.critic.parameters()))
    assert algo.state_dict()["updates"] == 1
    info = algo.update(storage)  # past the warm-up: the ordinary FPO++ update moves the flow
    assert "critic_warmup" not in info
    assert any(not torch.equal(a, b) for a, b in zip(flow, algo.policy.parameters()))
