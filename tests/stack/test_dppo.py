"""DPPO: a denoising step's clipped log-density, ratio 1 at the first epoch, the frozen copy, the per-index denoising
discount and clip, std clipping in sampling, both networks at acting/export, DDIM and K′ = 1, and learning."""

import math
import types

import numpy as np
import pytest
import torch

from policies import ValueNet, load_policy, save_policy
from policies.diffusion import DiffusionPolicy, FinetunedDiffusionPolicy
from stack.algos.dppo import DPPO, DPPOConfig, clip_schedule, denoising_discount, dppo_policy_loss, finetuned_policy
from stack.normalize import RewardScaler

torch.set_num_threads(1)

OBS_DIM, ACT_DIM, H = 4, 2, 4


def make_dppo(T=6, seed=0, policy_kw=None, **cfg_kw) -> DPPO:
    torch.manual_seed(seed)
    pretrained = DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=H, act_steps=H, denoising_steps=T, hidden=(32, 32, 32),
                                 **(policy_kw or {}))
    cfg = DPPOConfig(**({"ft_denoising_steps": 3, "act_steps": 2, "critic_hidden": (32, 32, 32)} | cfg_kw))
    return DPPO(finetuned_policy(pretrained, cfg, OBS_DIM, ACT_DIM),
                ValueNet(OBS_DIM, cfg.critic_hidden, "mish", residual=True), cfg, seed=seed)


def hand_log_prob(mean, std, x, floor, steps):
    """log N(x; mean, max(std, floor)²) per element, clamped to [−5, 2], mean over the first ``steps`` rows and dims."""
    s = std.clamp(min=floor)
    lp = -0.5 * ((x - mean) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)
    return lp.clamp(-5.0, 2.0)[:, :steps].mean(dim=(-1, -2))


# ---- a small rollout: point mass, chunks executed act_steps at a time ----------------------------------------------
class ChunkRollout:
    """Steps point-mass envs one decision at a time (an env whose episode ends inside a chunk stops there and is
    reset), filling a storage with the runner's fields: obs, rewards (scaled sum over the executed steps), values,
    next_values (V of the state reached), terminated, episode_end, extras["chains"]."""

    def __init__(self, num_envs: int, seed: int = 0):
        from sim.tasks.point_mass import PointMassTask

        self.envs = [PointMassTask() for _ in range(num_envs)]
        self.obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(self.envs)])
        self.scaler = RewardScaler(num_envs, 0.99)
        self.ep_return = np.zeros(num_envs)
        self.returns: list[float] = []

    def collect(self, algo: DPPO, steps: int):
        n = len(self.envs)

        def z(*shape, dtype=torch.float32):
            return torch.zeros(steps, n, *shape, dtype=dtype)

        st = types.SimpleNamespace(obs=z(OBS_DIM), rewards=z(), values=z(), next_values=z(),
                                   terminated=z(dtype=torch.bool), episode_end=z(dtype=torch.bool),
                                   advantages=z(), returns=z(),
                                   extras={k: z(*shape) for k, shape in algo.extras_spec().items()})
        for t in range(steps):
            obs = torch.from_numpy(self.obs).float()
            chunk, extras, value = algo.act(obs)
            st.obs[t], st.values[t] = obs, value
            for k, v in extras.items():
                st.extras[k][t] = v
            reward, term, end, reached = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), self.obs.copy()
            for i, env in enumerate(self.envs):
                for a in chunk[i].numpy() * 2.0:  # [−1, 1] → the point mass's ±2 force bounds
                    reached[i], r, term[i], trunc, _ = env.step(a)
                    reward[i] += r
                    self.ep_return[i] += r
                    if term[i] or trunc:
                        end[i] = True
                        self.returns.append(self.ep_return[i])
                        self.ep_return[i] = 0.0
                        break
                self.obs[i] = env.reset()[0] if end[i] else reached[i]
            st.rewards[t] = torch.from_numpy(self.scaler(reward, end))
            st.terminated[t], st.episode_end[t] = torch.from_numpy(term), torch.from_numpy(end)
            st.next_values[t] = algo.value(torch.from_numpy(reached).float())
        return st


def evaluate(algo: DPPO, episodes: int = 20) -> float:
    from sim.tasks.point_mass import PointMassTask

    envs = [PointMassTask() for _ in range(episodes)]
    generator = torch.Generator().manual_seed(0)
    obs = np.stack([e.reset(seed=10_000 + i)[0] for i, e in enumerate(envs)])
    total, alive = np.zeros(episodes), np.ones(episodes, bool)
    while alive.any():
        noise = torch.randn(algo.policy.noise_shape(len(obs)), generator=generator)
        with torch.no_grad():
            chunk = algo.policy.act(torch.from_numpy(obs).float(), noise=noise)[:, : algo.act_steps].numpy() * 2.0
        for i in np.flatnonzero(alive):
            for a in chunk[i]:
                obs[i], r, term, trunc, _ = envs[i].step(a)
                total[i] += r
                if term or trunc:
                    alive[i] = False
                    break
    return float(total.mean())


# ---- log-probability ------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_step_log_prob_equals_clipped_std_gaussian_density_by_hand():
    algo = make_dppo(T=6, ft_denoising_steps=3, act_steps=2)
    p = algo.policy
    obs = torch.randn(16, OBS_DIM)
    _, extras, _ = algo.act(obs)
    chains = extras["chains"]
    assert chains.shape == (16, 4, H, ACT_DIM)  # only the last K′+1 states are stored
    for k in range(3):
        x_k, x_prev = chains[:, k], chains[:, k + 1]
        far = x_prev + torch.linspace(-1.0, 1.0, H * ACT_DIM).reshape(1, H, ACT_DIM)  # reaches the −5 clamp
        mean, std = p.step_distribution(x_k, algo.first_ft + k, obs, net=p.ft_net)
        for x in (x_prev, far):
            got = algo.log_prob(obs, x_k, x, torch.full((16,), k))
            assert torch.allclose(got, hand_log_prob(mean, std, x, 0.1, 2), atol=1e-5)
    # the floor and the clamp are both in play: the last step's schedule std is ≈ 0, and "far" goes below −5
    _, std_last = p.step_distribution(chains[:, 2], algo.num_steps - 1, obs, net=p.ft_net)
    assert std_last.max() < 0.1
    mean, _ = p.step_distribution(chains[:, 2], algo.num_steps - 1, obs, net=p.ft_net)
    far = chains[:, 3] + 1.0
    assert (-0.5 * ((far - mean) / 0.1) ** 2).min() < -5


@torch.no_grad()
def test_chain_log_probs_index_each_stored_transition():
    algo = make_dppo(T=6, ft_denoising_steps=3)
    obs = torch.randn(5, OBS_DIM)
    chains = algo.act(obs)[1]["chains"]
    table = algo.chain_log_probs(obs, chains)
    assert table.shape == (5, 3)
    for k in range(3):
        assert torch.allclose(table[:, k], algo.log_prob(obs, chains[:, k], chains[:, k + 1], torch.full((5,), k)),
                              atol=1e-6)


# ---- the loss's per-index pieces ------------------------------------------------------------------------------------
def test_denoising_discount_and_clip_schedule_by_hand():
    k = torch.arange(10)
    assert denoising_discount(k, 10, 0.99).tolist() == pytest.approx([0.99 ** (9 - i) for i in range(10)])
    assert float(denoising_discount(torch.tensor([9]), 10, 0.99)) == 1.0  # the last step has weight 1
    eps = clip_schedule(k, 10, clip=0.01, clip_base=0.001, rate=3.0)
    expected = [0.001 + 0.009 * (math.exp(3 * i / 9) - 1) / (math.exp(3) - 1) for i in range(10)]
    assert eps.tolist() == pytest.approx(expected)
    assert float(eps[0]) == pytest.approx(0.001) and float(eps[-1]) == pytest.approx(0.01)
    # K′ = 1: the reference divides by zero; here the one step is the last one and gets ε
    assert clip_schedule(torch.tensor([0]), 1, 0.01, 0.001, 3.0).tolist() == pytest.approx([0.01])
    assert float(denoising_discount(torch.tensor([0]), 1, 0.99)) == 1.0


def test_policy_loss_applies_discount_and_clip_per_denoising_index():
    cfg = DPPOConfig(clip_coef=0.01, clip_coef_base=0.001, gamma_denoising=0.9, norm_adv=False)
    k = torch.tensor([0, 9, 0, 9, 4])
    adv = torch.tensor([2.0, 2.0, -1.0, 3.0, 1.0])
    # ratio 1.005: beyond k = 0's clip (0.001) but inside k = 9's (0.01); ratio 1 elsewhere
    ratio = torch.tensor([1.005, 1.005, 1.0, 1.0, 1.0], requires_grad=True)
    loss, clipfrac = dppo_policy_loss(ratio, adv, k, cfg, ft_steps=10)
    loss.backward()
    n = 5
    assert ratio.grad.tolist() == pytest.approx([0.0, -2.0 / n, 1.0 * 0.9**9 / n, -3.0 / n, -1.0 * 0.9**5 / n])
    assert float(clipfrac) == pytest.approx(1 / 5)
    a_hat = adv * 0.9 ** (9 - k).float()
    clipped = torch.tensor([1.001, 1.005, 1.0, 1.0, 1.0])
    by_hand = torch.max(-a_hat * ratio.detach(), -a_hat * clipped).mean()
    assert float(loss.detach()) == pytest.approx(float(by_hand), abs=1e-7)
    # with normalisation the advantages are standardised over the minibatch before the discount
    cfg_n = DPPOConfig(clip_coef=0.01, clip_coef_base=0.001, gamma_denoising=0.9)
    r = torch.ones(5, requires_grad=True)
    dppo_policy_loss(r, adv, k, cfg_n, ft_steps=10)[0].backward()
    norm = (adv - adv.mean()) / (adv.std() + 1e-8)
    assert r.grad.tolist() == pytest.approx((-norm * 0.9 ** (9 - k).float() / n).tolist(), abs=1e-6)


# ---- sampling -------------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_std_is_floored_and_draws_clipped_in_training_sampling():
    algo = make_dppo(T=6, ft_denoising_steps=3)
    p = algo.policy
    obs = torch.randn(2000, OBS_DIM)
    chains = algo.act(obs)[1]["chains"]
    mean, std = p.step_distribution(chains[:, -2], algo.num_steps - 1, obs, net=p.ft_net)
    assert std.max() < 1e-3  # x^1 → x^0 has (almost) no noise of its own ...
    inside = chains[:, -1].abs() < 1.0  # (x^0 is clamped to ±1)
    residual = (chains[:, -1] - mean)[inside] / 0.1
    assert residual.std() == pytest.approx(1.0, abs=0.05)  # ... but is sampled with std 0.1
    assert residual.abs().max() <= 3.0 + 1e-4  # N(0, 1) draws clipped to ±3
    assert residual.abs().max() > 2.5
    # evaluation samples the DDPM chain with the schedule's std: no floor
    noise = torch.randn(p.noise_shape(2000))
    x0 = p.act(obs, noise=noise)
    chain = p.sample_chain(obs, noise=noise)
    m_eval, _ = p.step_distribution(chain[:, -2], algo.num_steps - 1, obs)
    assert (x0 - m_eval.clamp(-1, 1)).abs().max() < 1e-3


# ---- the update -----------------------------------------------------------------------------------------------------
def test_ratios_are_one_at_the_first_epoch_and_the_frozen_copy_never_moves():
    algo = make_dppo(T=6, ft_denoising_steps=3, act_steps=2, batch_size=10_000, update_epochs=3, actor_lr=1e-3,
                     target_kl=None)
    p = algo.policy
    frozen = {k: v.clone() for k, v in p.net.state_dict().items()}
    ft0 = {k: v.clone() for k, v in p.ft_net.state_dict().items()}
    rollout = ChunkRollout(4)
    for _ in range(2):  # the second iteration starts from an ft_net that differs from the frozen one
        st = rollout.collect(algo, 16)
        algo.compute_returns(st)
        info = algo.update(st)
        assert info["minibatches"] == 3  # one minibatch = all 16·4·3 pairs, so the first is the whole first epoch
        assert info["first_ratio_dev"] < 1e-6
        assert info["approx_kl"] > 0.0  # later epochs did move the policy
    assert all(torch.equal(v, frozen[k]) for k, v in p.net.state_dict().items())
    assert all(q.grad is None and not q.requires_grad for q in p.net.parameters())
    assert any(not torch.equal(v, ft0[k]) for k, v in p.ft_net.state_dict().items())


def test_only_the_fine_tuned_steps_are_in_the_loss_graph():
    algo = make_dppo(T=6, ft_denoising_steps=2)
    p = algo.policy
    p.net.requires_grad_(True)  # even if the frozen copy asked for gradients, the loss must not reach it
    obs = torch.randn(8, OBS_DIM)
    chains = algo.act(obs)[1]["chains"]
    k = torch.tensor([0, 1] * 4)
    algo.log_prob(obs, chains[torch.arange(8), k], chains[torch.arange(8), k + 1], k).sum().backward()
    assert all(q.grad is None for q in p.net.parameters())
    assert all(q.grad is not None for q in p.ft_net.parameters())


def test_k_prime_one_and_ddim_fine_tuning_update():
    for kw in ({"ft_denoising_steps": 1},
               {"use_ddim": True, "ddim_steps": 3, "ft_denoising_steps": 3, "bc_loss_coef": 0.1}):
        algo = make_dppo(T=12, batch_size=64, update_epochs=2, **kw)
        st = ChunkRollout(3).collect(algo, 8)
        algo.compute_returns(st)
        info = algo.update(st)
        assert info["first_ratio_dev"] < 1e-6
        assert all(math.isfinite(v) for v in (info["policy_loss"], info["value_loss"], info["bc_loss"]))
    # DDIM: the training chain (η = 1, std floor) is stochastic; evaluation is DDIM with η = 0 from x^K only
    p = algo.policy
    assert (p.ft_sampler, p.ft_ddim_steps, p.sampler, p.ddim_steps, p.eta) == ("ddim", 3, "ddim", 3, 0.0)
    assert algo.extras_spec()["chains"] == (4, H, ACT_DIM)  # K′ = ddim_steps: x^K is stored too
    assert info["bc_loss"] != 0.0
    obs = torch.randn(3, OBS_DIM)
    x_k = torch.randn(p.noise_shape(3))
    assert x_k.shape == (3, H, ACT_DIM)
    assert torch.equal(p.act(obs, noise=x_k), p.act(obs, noise=x_k))


# ---- the fine-tuned policy: both networks, save/load, export --------------------------------------------------------
@torch.no_grad()
def test_fine_tuned_policy_acts_with_both_networks(tmp_path):
    algo = make_dppo(T=6, ft_denoising_steps=2)
    p = algo.policy
    for q in p.ft_net.parameters():
        q.add_(0.05 * torch.randn_like(q))
    calls = {"net": 0, "ft_net": 0}
    hooks = [getattr(p, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
             for name in calls]
    obs = torch.randn(3, OBS_DIM)
    algo.act(obs)
    assert calls == {"net": 4, "ft_net": 2}  # K − K′ frozen steps, then K′ fine-tuned ones
    noise = torch.randn(p.noise_shape(3))
    p.act(obs, noise=noise)
    a = p.act(obs, noise=noise)
    assert calls == {"net": 12, "ft_net": 6}
    for h in hooks:
        h.remove()
    mixed = p.sample_chain(obs, noise=noise, net_for_step=lambda i: p.ft_net if i >= 4 else p.net)[:, -1]
    assert torch.equal(a, mixed)
    assert not torch.allclose(a, p.act(obs, noise=noise, net=p.net))
    assert not torch.allclose(a, p.act(obs, noise=noise, net=p.ft_net))
    # a saved checkpoint rebuilds both networks and acts the same
    save_policy(p, tmp_path / "policy")
    loaded = load_policy(tmp_path / "policy")
    assert isinstance(loaded, FinetunedDiffusionPolicy)
    assert torch.equal(loaded.act(obs, noise=noise), a)
    assert [loaded.net_for_step(i) is loaded.ft_net for i in range(6)] == [False] * 4 + [True] * 2


def test_export_unrolls_both_networks(tmp_path):
    from stack.export import ExportSpec, export_policy

    algo = make_dppo(T=6, ft_denoising_steps=2)
    p = algo.policy
    with torch.no_grad():
        for q in p.ft_net.parameters():
            q.add_(0.05 * torch.randn_like(q))
    spec = ExportSpec(np.zeros(OBS_DIM), np.ones(OBS_DIM), None, -2 * np.ones(ACT_DIM), 2 * np.ones(ACT_DIM),
                      "minmax")
    # the parity check compares the graph with the torch policy, which acts with both networks
    out = export_policy(p, spec, tmp_path / "p.onnx", {}, net_for_step=p.net_for_step)
    assert out["parity_max_abs_err"] < 1e-4
    # ... and without being told: the exporter asks the fine-tuned policy for its per-step networks itself
    out = export_policy(p, spec, tmp_path / "q.onnx", {})
    assert out["parity_max_abs_err"] < 1e-4


# ---- learning -------------------------------------------------------------------------------------------------------
def weak_pretrained_policy(grad_steps: int, seed: int = 0) -> DiffusionPolicy:
    """BC of a sloppy PD controller (low gains, action noise) on the point mass, stopped early: a weak start."""
    from sim.tasks.point_mass import PointMassTask

    rng = np.random.default_rng(seed)
    env = PointMassTask()
    obs, chunks = [], []
    for ep in range(40):
        o, _ = env.reset(seed=seed + ep)
        ep_obs, ep_act = [], []
        for _ in range(50):
            a = np.clip(-1.5 * o[:2] - 1.0 * o[2:] + 0.3 * rng.standard_normal(2), -2.0, 2.0)
            ep_obs.append(o)
            ep_act.append(a / 2.0)
            o, _, term, trunc, _ = env.step(a)
            if term or trunc:
                break
        for t in range(len(ep_act)):  # the next H actions, the last repeated after the episode's end
            obs.append(ep_obs[t])
            chunks.append([ep_act[min(t + j, len(ep_act) - 1)] for j in range(H)])
    obs_t, act_t = torch.tensor(np.array(obs), dtype=torch.float32), torch.tensor(np.array(chunks), dtype=torch.float32)
    torch.manual_seed(seed)
    policy = DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=H, act_steps=H, denoising_steps=10, hidden=(64, 64, 64))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(grad_steps):
        idx = torch.randint(0, len(obs_t), (128,), generator=gen)
        loss = policy.bc_loss(obs_t[idx], act_t[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy


def write_bc_checkpoint(policy: DiffusionPolicy, run_dir) -> None:
    """The layout ``stack.algos.bc`` writes (policy/, normalization.json, meta.json): identity observation
    normalisation, the point mass's ±2 force bounds."""
    from stack import checkpoint
    from stack.normalize import ObsNormalizer
    from stack.rollout import ActionScaler

    norm = {"obs": ObsNormalizer(OBS_DIM, enabled=False).state_dict(),
            "action": ActionScaler(-2 * np.ones(ACT_DIM), 2 * np.ones(ACT_DIM), "minmax").state_dict()}
    checkpoint.save(run_dir / "checkpoints" / "latest", modules={"policy": policy}, normalization=norm,
                    meta={"algo": "bc", "policy": "diffusion", "task": "point_mass", "obs_dim": OBS_DIM,
                          "act_dim": ACT_DIM, "horizon": policy.horizon, "act_steps": H, "obs_steps": 1,
                          "sampling": {"sampler": "ddpm"}, "seed": 0, "env_steps": 0})


def finetune(tmp_path, iterations: int, seed: int = 0) -> tuple[float, float]:
    """Weak BC policy → ``r2s train --algo dppo --init_from`` (the shared runner) → both evaluated on the same seeds."""
    from stack.config import EnvConfig, TrainConfig
    from stack.controller import PolicyController
    from stack.evaluate import evaluate
    from stack.train import train

    write_bc_checkpoint(weak_pretrained_policy(100, seed), tmp_path / "bc")
    before = evaluate(PolicyController.from_checkpoint(tmp_path / "bc", seed=seed), "point_mass", 20,
                      seed=10_000)["return_mean"]
    num_envs, rollout_steps = 8, 25
    cfg = TrainConfig(algo="dppo", policy="diffusion", init_from=str(tmp_path / "bc"), seed=seed,
                      env=EnvConfig(task="point_mass", num_envs=num_envs, backend="sync"),
                      dppo=DPPOConfig(ft_denoising_steps=5, act_steps=4, rollout_steps=rollout_steps, batch_size=1000,
                                      update_epochs=5, actor_lr=1e-3, target_kl=None, critic_hidden=(64, 64, 64)),
                      total_env_steps=iterations * num_envs * rollout_steps * 4, eval_every=0, eval_episodes=2,
                      checkpoint_every=0, runs_dir=str(tmp_path), name="dppo", progress=False)
    run = train(cfg)
    after = evaluate(PolicyController.from_checkpoint(run, seed=seed), "point_mass", 20, seed=10_000)["return_mean"]
    return before, after


def test_dppo_improves_a_weak_pretrained_policy(tmp_path):
    before, after = finetune(tmp_path, iterations=60)  # ≤ 48k env steps
    assert before < 30.0  # weak (a tuned PD controller scores about 44)
    assert after > before + 8.0


@pytest.mark.slow
def test_dppo_improves_a_weak_pretrained_policy_long(tmp_path):
    for seed in (0, 1):
        before, after = finetune(tmp_path / str(seed), iterations=150, seed=seed)
        assert after > before + 10.0 and after > 38.0


# ---- the shared runner: checkpoint layout and exact resume -----------------------------------------------------------
def _tiny_run(tmp_path, name, steps, **kw):
    import csv

    from stack.config import EnvConfig, TrainConfig
    from stack.runners import TIMING_KEYS
    from stack.train import train

    # act_steps = 1: every iteration is exactly rollout_steps × num_envs env steps, so the budgets below are exact
    cfg = TrainConfig(algo="dppo", policy="diffusion", seed=3,
                      env=EnvConfig(task="point_mass", num_envs=4, backend="sync"),
                      dppo=DPPOConfig(act_steps=1, rollout_steps=8, ft_denoising_steps=2, batch_size=32,
                                      update_epochs=2, horizon=2, denoising_steps=4, actor_hidden=(16, 16, 16),
                                      critic_hidden=(16, 16, 16)),
                      total_env_steps=steps, eval_every=64, eval_episodes=2, checkpoint_every=64,
                      runs_dir=str(tmp_path), name=name, progress=False, **kw)
    run = train(cfg)
    with open(run / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in r.items() if v != "" and k not in TIMING_KEYS} for r in csv.DictReader(f)]
    return run, rows


def test_runner_checkpoint_holds_both_networks_and_resumes_exactly(tmp_path):
    import json

    whole_run, whole = _tiny_run(tmp_path, "whole", 128)
    part, _ = _tiny_run(tmp_path, "part", 64)
    resumed, rows = _tiny_run(tmp_path, "ignored", 128, resume=str(part))
    assert [r["env_steps"] for r in rows] == [32, 64, 96, 128]
    for a, b in zip(whole, rows):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), (a["env_steps"], k)
    ckpt = whole_run / "checkpoints" / "latest"
    policy = load_policy(ckpt / "policy")
    assert isinstance(policy, FinetunedDiffusionPolicy) and policy.act_steps == 1
    assert json.loads((ckpt / "meta.json").read_text())["sampling"] == {"sampler": "ddpm"}


# ---- small-budget fidelity (issue 13) --------------------------------------------------------------------------------
def test_training_chain_keeps_the_unclamped_action_and_its_log_prob():
    """clamp_action off (the reference's default): x^0 of the stored chain is the drawn sample, beyond ±1 where it was
    drawn there, and the chunk the collector receives is that same sample (the env's ActionScaler clips it)."""
    algo = make_dppo(T=6, ft_denoising_steps=3, act_steps=2, min_sampling_denoising_std=1.0)  # wide: saturates
    obs = torch.randn(64, OBS_DIM)
    chunk, extras, _ = algo.act(obs)
    x0 = extras["chains"][:, -1]
    assert x0.abs().max() > 1.0
    torch.testing.assert_close(chunk, x0[:, :2])
    clamped = make_dppo(T=6, ft_denoising_steps=3, act_steps=2, min_sampling_denoising_std=1.0, clamp_action=True)
    assert clamped.act(obs)[1]["chains"][:, -1].abs().max() <= 1.0


def test_per_rollout_reward_scaling_uses_one_std_from_the_whole_rollout():
    rng = np.random.default_rng(0)
    rewards = rng.normal(2.0, 1.0, size=(7, 3))
    end = np.zeros((7, 3), bool)
    end[2, 1] = end[4, 0] = True
    scaler = RewardScaler(3, 0.9, clip=100.0, mode="per_rollout")
    scaled = scaler.scale_rollout(rewards, end)
    g, rets = np.zeros(3), []
    for t in range(7):
        g = 0.9 * g + rewards[t]
        rets.append(g.copy())
        g[end[t]] = 0.0
    rets = np.concatenate(rets)
    var = (rets.var() * len(rets) + 1e-4 * 1.0 + 1e-4 * rets.mean() ** 2 * len(rets) / (len(rets) + 1e-4)) / \
        (len(rets) + 1e-4)  # Chan's update from the prior (mean 0, var 1, count 1e-4)
    np.testing.assert_allclose(scaled, rewards / np.sqrt(var + 1e-8), rtol=1e-5)
    np.testing.assert_allclose(scaler.returns, g)  # the running returns carry into the next rollout
    # per step (CleanRL): each step divided by the std so far, so the first rows get a different scale
    per_step = RewardScaler(3, 0.9, clip=100.0)
    stepwise = np.stack([per_step(rewards[t], end[t]) for t in range(7)])
    assert not np.allclose(stepwise[0] / rewards[0], scaled[0] / rewards[0])
    with pytest.raises(ValueError, match="reward scaling mode"):
        RewardScaler(3, 0.9, mode="per_episode")


def test_runner_scales_rewards_per_rollout_when_fine_tuning():
    from stack.config import TrainConfig
    from stack.runners.on_policy import reward_scaling_mode

    assert reward_scaling_mode(TrainConfig(algo="dppo", init_from="runs/bc")) == "per_rollout"
    assert reward_scaling_mode(TrainConfig(algo="fpo", init_from="runs/bc")) == "per_rollout"
    assert reward_scaling_mode(TrainConfig(algo="ppo")) == "per_step"  # CleanRL's (the golden metrics)
    cfg = TrainConfig(algo="dppo", init_from="runs/bc")
    cfg.dppo.reward_scaling = "per_step"
    assert reward_scaling_mode(cfg) == "per_step"


def test_critic_warmup_fits_the_critic_and_leaves_the_actor():
    algo = make_dppo(T=6, ft_denoising_steps=3, act_steps=2, n_critic_warmup_itr=1, critic_warmup_epochs=30,
                     critic_warmup_batch=16)
    ft0 = {k: v.clone() for k, v in algo.policy.ft_net.state_dict().items()}
    st = ChunkRollout(4).collect(algo, 16)
    algo.compute_returns(st)
    info = algo.update(st)
    assert info["critic_warmup"] == 1.0 and info["minibatches"] == 30 * 4
    assert info["explained_variance_after"] > max(0.5, info["explained_variance"])
    assert all(torch.equal(v, ft0[k]) for k, v in algo.policy.ft_net.state_dict().items())
    info = algo.update(st)  # the next iteration trains the actor
    assert "critic_warmup" not in info
    assert any(not torch.equal(v, ft0[k]) for k, v in algo.policy.ft_net.state_dict().items())


def test_bc_chunk_windows_past_an_episode_end_are_not_trained_on(tmp_path):
    """The offline runner draws only frames whose whole chunk lies inside the episode (DPPO's dataset skips the
    others); ``batch`` still indexes every frame."""
    from stack.config import BCConfig, TrainConfig
    from stack.data import EpisodeWriter
    from stack.runners.offline import OfflineRunner

    writer = EpisodeWriter(tmp_path / "ds", robot="toy", task="toy-no-sim", fps=10, obs_dim=OBS_DIM, act_dim=ACT_DIM)
    for length in (10, 6):
        for t in range(length):
            writer.add_step(np.full(OBS_DIM, t, np.float32), np.full(ACT_DIM, t, np.float32), 0.0,
                            truncated=t == length - 1)
        writer.end_episode()
    ds = writer.close()
    cfg = TrainConfig(algo="bc", policy="diffusion", dataset=str(ds), eval_episodes=0, progress=False,
                      tensorboard=False, runs_dir=str(tmp_path), name="bc",
                      bc=BCConfig(horizon=4, act_steps=4, grad_steps=1, batch_size=8,
                                  policy_kwargs={"hidden": [16, 16, 16], "denoising_steps": 4}))
    runner = OfflineRunner(cfg)
    assert runner.train_frames.tolist() == list(range(0, 7)) + list(range(10, 13))


def test_bench_pairs_noise_per_env_slot_and_takes_the_se_of_paired_differences():
    """``r2s bench dppo``'s paired evaluation: slot i's chunks get the noise of generator seed + i whichever other slots
    plan with it (so two policies whose episodes end at different times still see the same noise), and the standard
    error is that of the per-episode differences."""
    from stack.bench.dppo import AS_TRAINED, paired_improvement, per_slot_noise_controller
    from stack.normalize import ObsNormalizer
    from stack.rollout import ActionScaler

    torch.manual_seed(0)
    policy = DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=H, act_steps=H, denoising_steps=6, hidden=(16, 16, 16))

    def controller(sampling=None):
        c = per_slot_noise_controller()(policy, ObsNormalizer(OBS_DIM, enabled=False),
                                        ActionScaler([-1.0] * ACT_DIM, [1.0] * ACT_DIM), act_steps=2, seed=7)
        c.sampling = {**c.sampling, **(sampling or {})}  # as paired_controller sets them
        c.reset()
        return c

    obs = np.random.default_rng(0).normal(size=(3, OBS_DIM))
    together = controller().act_batch(obs, [0, 1, 2])
    alone = controller().act_batch(obs[1:2], [1])
    np.testing.assert_allclose(together[1], alone[0])
    assert not np.allclose(together[0], together[1])
    floored = controller(AS_TRAINED).act_batch(obs, [0, 1, 2])  # the training chain's floor changes the samples
    assert not np.allclose(floored, together)

    imp = paired_improvement([100.0, 110.0, 90.0, 100.0], [120.0, 125.0, 100.0, 115.0])
    d = np.array([20.0, 15.0, 10.0, 15.0])
    assert imp["improvement"] == pytest.approx(d.mean() / 100.0)
    assert imp["improvement_paired_se"] == pytest.approx(d.std(ddof=1) / 2 / 100.0)
