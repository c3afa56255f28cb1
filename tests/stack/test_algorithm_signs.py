"""Fast tests that catch a wrong algorithm: a flipped sign or a reversed index fails here in well under a second.

Each test drives the real classes of ``stack.algos`` (PPO, FPO, FPO++, DPPO, SAC, BC) on synthetic data — a one-step
bandit at one fixed observation, a hand-made critic — instead of an environment, so it checks the direction of an
update rather than learning. The list of mutations these tests are known to catch is in ``tests/README.md``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from policies import DiffusionPolicy, GaussianPolicy, ValueNet
from stack.algos import dppo as dppo_mod
from stack.algos import fpo as fpo_mod
from stack.algos import ppo as ppo_mod
from stack.algos.bc import BC
from stack.algos.dppo import DPPO, finetuned_policy
from stack.algos.fpo import FPO, build_flow_policy, fpo_log_ratio, fpo_policy_loss
from stack.algos.on_policy import normalize_advantages
from stack.algos.ppo import PPO
from stack.algos.sac import SAC
from stack.config import BCConfig, DPPOConfig, FPOConfig, PPOConfig, SACConfig
from stack.rollout import RolloutStorage

torch.set_num_threads(1)

OBS_DIM, ACT_DIM = 3, 2
BATCH = 256


@pytest.fixture(scope="module", autouse=True)
def _warm_fused_adam():
    """The first step of a fused Adam (PPO's optimiser) in a process costs ~1 s of one-time set-up: paid here, once,
    so that no test's own time includes it."""
    p = nn.Parameter(torch.zeros(1))
    p.grad = torch.ones(1)
    torch.optim.Adam([p], fused=True).step()


def bandit_obs(b: int = BATCH) -> torch.Tensor:
    """One fixed observation repeated: a one-step bandit whose only variable is the sampled action."""
    return torch.tensor([0.3, -0.2, 0.5]).expand(b, OBS_DIM).clone()


def bandit_storage(algo, obs: torch.Tensor, advantage_of, executed: int = 1) -> RolloutStorage:
    """A rollout of B one-step decisions at ``obs`` (T = B rows, one env): the algorithm's own samples and extras,
    advantages ``advantage_of(executed action [B, A])`` and returns equal to the values (a zero value target)."""
    b = obs.shape[0]
    st = RolloutStorage(b, 1, OBS_DIM, ACT_DIM, horizon=algo.act_steps, extras_spec=algo.extras_spec())
    chunk, extras, values = algo.act(obs)
    st.obs[:, 0], st.actions[:, 0], st.values[:, 0], st.returns[:, 0] = obs, chunk, values, values
    for k, v in extras.items():
        st.extras[k][:, 0] = v
    st.executed.fill_(executed)
    st.advantages[:, 0] = advantage_of(chunk[:, 0])
    return st


def favour_positive_x(actions: torch.Tensor) -> torch.Tensor:
    """Advantage = the first action coordinate: the better half of the samples lies at larger x."""
    return actions[:, 0]


# ---- 1. one update moves the mean action toward the higher-advantage side ------------------------------------------
def test_ppo_update_moves_the_mean_toward_the_higher_advantage_action():
    torch.manual_seed(0)
    policy = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(16,), log_std_init=-0.5)
    algo = PPO(policy, ValueNet(OBS_DIM, (16,), "tanh"), PPOConfig(lr=1e-2, update_epochs=2, num_minibatches=4))
    obs = bandit_obs()
    with torch.no_grad():
        before = policy.act(obs[:1], deterministic=True)[0, 0]
    algo.update(bandit_storage(algo, obs, favour_positive_x))
    with torch.no_grad():
        shift = policy.act(obs[:1], deterministic=True)[0, 0] - before
    # x (the favoured coordinate) moves up clearly (0.36–0.39 over seeds 0–3; a flipped sign moves it down); y, with
    # no advantage signal, moves less
    assert shift[0] > 0.15, shift
    assert shift[0] > shift[1].abs(), shift


def _flow_mean(policy, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow policy's mean action, estimated on fixed noise (the same draws before and after the update)."""
    with torch.no_grad():
        _, raw = policy.sample(obs, noise=noise, return_presquash=True)
    return raw[:, 0].mean(0)


@pytest.mark.parametrize("variant", ["fpo", "fpo++"])
def test_fpo_update_moves_the_mean_toward_the_higher_advantage_action(variant):
    torch.manual_seed(0)
    cfg = FPOConfig(variant=variant, lr=1e-2, update_epochs=4, num_minibatches=2, n_mc=8, hidden=(32, 32),
                    euler_steps=4)
    policy = build_flow_policy(cfg, OBS_DIM, ACT_DIM)
    algo = FPO(policy, ValueNet(OBS_DIM, (16,), "silu"), cfg, seed=0)
    obs = bandit_obs()
    noise = torch.randn(BATCH, 1, ACT_DIM, generator=torch.Generator().manual_seed(5))
    before = _flow_mean(policy, obs, noise)
    with torch.no_grad():
        before_zero = policy.sample(obs[:1], zero_noise=True, return_presquash=True)[1][0, 0]
    algo.update(bandit_storage(algo, obs, favour_positive_x))
    shift = _flow_mean(policy, obs, noise) - before
    with torch.no_grad():
        shift_zero = policy.sample(obs[:1], zero_noise=True, return_presquash=True)[1][0, 0] - before_zero
    assert shift[0] > 0.04, shift  # FPO 0.55–0.71, FPO++ 0.08–0.10 (its trust region) over seeds 0–3
    assert shift[0] > shift[1].abs(), shift
    assert shift_zero[0] > 0.0, shift_zero  # the zero-sampling (evaluation) action moves the same way


def make_dppo(ft_steps: int = 3, seed: int = 0, **cfg_kw) -> DPPO:
    """A fresh tiny diffusion policy (T = 4) fine-tuned on its last ``ft_steps`` steps; one-action chunks."""
    torch.manual_seed(seed)
    pretrained = DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=1, act_steps=1, denoising_steps=4, hidden=(16, 16, 16))
    cfg = DPPOConfig(**({"ft_denoising_steps": ft_steps, "act_steps": 1, "critic_hidden": (16, 16, 16),
                         "target_kl": None} | cfg_kw))
    return DPPO(finetuned_policy(pretrained, cfg, OBS_DIM, ACT_DIM),
                ValueNet(OBS_DIM, cfg.critic_hidden, "mish", residual=True), cfg, seed=seed)


def test_dppo_update_moves_the_mean_toward_the_higher_advantage_action():
    algo = make_dppo(ft_steps=3, actor_lr=3e-3, clip_coef=0.1, clip_coef_base=0.1, batch_size=192, update_epochs=2)
    p = algo.policy
    obs = bandit_obs()
    noise = torch.randn(p.noise_shape(BATCH, "stochastic"), generator=torch.Generator().manual_seed(5))

    def mean_action() -> torch.Tensor:  # the evaluation chain (DDPM, both networks) on fixed noise
        with torch.no_grad():
            return p.act(obs, noise=noise)[:, 0].mean(0)

    before = mean_action()
    algo.update(bandit_storage(algo, obs, favour_positive_x))
    shift = mean_action() - before
    assert shift[0] > 0.03, shift  # 0.06–0.13 over seeds 0–3
    assert shift[0] > shift[1].abs(), shift


# ---- 2. SAC: one actor step moves the action along ∇ₐQ -------------------------------------------------------------
class HandQ(nn.Module):
    """Twin Q(s, a) = −‖a − a*‖² (both heads equal); a* is a parameter only so that the Q step has one (lr 0)."""

    def __init__(self, target):
        super().__init__()
        self.target = nn.Parameter(torch.as_tensor(target, dtype=torch.float32))

    def forward(self, obs, action):
        q = -(action - self.target).pow(2).sum(-1)
        return q, q

    def min_q(self, obs, action):
        return self(obs, action)[0]


def test_sac_actor_step_moves_the_action_along_grad_q():
    torch.manual_seed(0)
    target = torch.tensor([0.6, -0.4])
    actor = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(16,), activation="relu", log_std_init=-2.0,
                           state_dependent_std=True, squash="tanh")
    sac = SAC(actor, HandQ(target), SACConfig(q_lr=0.0, policy_lr=1e-2, alpha=1e-3, autotune=False,
                                             policy_frequency=1))
    obs = bandit_obs(64)
    batch = {"obs": obs, "actions": torch.zeros(64, ACT_DIM), "rewards": torch.zeros(64), "next_obs": obs,
             "terminated": torch.ones(64)}
    with torch.no_grad():
        a0 = actor.act(obs[:1], deterministic=True)[0, 0]
    sac.update(batch)
    with torch.no_grad():
        a1 = actor.act(obs[:1], deterministic=True)[0, 0]
    grad_q = -2.0 * (a0 - target)  # ∇ₐQ at the old action
    step = a1 - a0
    assert torch.equal(torch.sign(step), torch.sign(grad_q)), (step, grad_q)
    assert float(step @ grad_q) > 0.0
    assert torch.equal(sac.qnet.target.detach(), target)  # the hand-made critic did not move


# ---- 3. BC: one step moves the mean toward the demonstrated action -------------------------------------------------
@pytest.mark.parametrize("objective", ["mse", "nll"])
def test_bc_step_moves_the_mean_toward_the_demonstrated_action(objective):
    torch.manual_seed(0)
    policy = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(16,))
    bc = BC(policy, BCConfig(lr=1e-2, gaussian_objective=objective, ema=False), total_steps=1)
    obs = bandit_obs(32)
    demo = torch.tensor([0.5, -0.3]).expand(32, 1, ACT_DIM)
    with torch.no_grad():
        before = policy.act(obs[:1], deterministic=True)[0, 0]
    bc.train_step(obs, demo)
    with torch.no_grad():
        after = policy.act(obs[:1], deterministic=True)[0, 0]
    assert ((after - demo[0, 0]).abs() < (before - demo[0, 0]).abs()).all(), (before, after)


# ---- 4. DPPO: the discount and the clip of a pair use its own denoising index k ------------------------------------
def spy_dppo_update(algo: DPPO, monkeypatch) -> list[dict]:
    """Run-time record of every minibatch of ``algo.update``: the true chain index of each pair (found by matching
    the x^k the update fed to ``log_prob`` against the stored chains, so it does not trust any index variable), and
    the gradient of the loss with respect to each pair's ratio."""
    records: list[dict] = []
    real_log_prob, real_loss = algo.log_prob, dppo_mod.dppo_policy_loss

    def log_prob(obs, x_k, x_prev, k, net=None):
        if torch.is_grad_enabled():  # the update's minibatch (chain_log_probs runs under no_grad)
            records.append({"x_k": x_k.detach().clone()})
        return real_log_prob(obs, x_k, x_prev, k, net)

    def policy_loss(ratio, advantages, k, cfg, ft_steps, rows=None):
        rec = records[-1]
        rec["adv"] = advantages.detach().clone()
        ratio.register_hook(lambda g: rec.__setitem__("grad", g.clone()))
        rec["ratio"] = ratio.detach().clone()
        return real_loss(ratio, advantages, k, cfg, ft_steps, rows)

    monkeypatch.setattr(algo, "log_prob", log_prob)
    monkeypatch.setattr(dppo_mod, "dppo_policy_loss", policy_loss)
    return records


def chain_index(chains: torch.Tensor, x_k: torch.Tensor) -> torch.Tensor:
    """The fine-tuned step k (0 = noisiest) whose stored state chains[i, k] equals each row of x_k."""
    kp = chains.shape[1] - 1
    states = chains[:, :-1].reshape(-1, x_k[0].numel())  # row i·K′ + k
    match = (x_k.reshape(len(x_k), 1, -1) == states.unsqueeze(0)).all(-1)
    assert bool((match.sum(-1) == 1).all()), "each minibatch row is one stored state"
    return match.float().argmax(-1) % kp


def test_dppo_denoising_discount_weights_each_pair_by_its_own_index(monkeypatch):
    kp, gamma = 3, 0.5
    algo = make_dppo(ft_steps=kp, gamma_denoising=gamma, norm_adv=False, batch_size=10_000, update_epochs=1,
                     clip_coef=0.1, clip_coef_base=0.1)
    st = bandit_storage(algo, bandit_obs(64), lambda a: torch.ones(len(a)))
    records = spy_dppo_update(algo, monkeypatch)
    algo.update(st)
    (rec,) = records  # one minibatch of all 64·3 pairs, at the rollout parameters: every ratio is 1
    k = chain_index(st.extras["chains"][:, 0], rec["x_k"])
    assert torch.allclose(rec["ratio"], torch.ones_like(rec["ratio"]), atol=1e-6)
    assert sorted(k.bincount().tolist()) == [64, 64, 64]
    # d loss / d r = −Â·γ_denoising^(K′−1−k) / n: the last (least noisy) step has weight 1, the noisiest γ^(K′−1)
    n = len(k)
    expected = -(gamma ** (kp - 1 - k).float()) / n
    torch.testing.assert_close(rec["grad"], expected, rtol=1e-5, atol=1e-9)


def test_dppo_clip_schedule_clips_each_pair_with_its_own_index(monkeypatch):
    # K′ = 2: ε_0 (noisiest) = clip_base = 1e-6, ε_1 (last) = clip = 10. After one epoch every ratio has moved by more
    # than 1e-6, so in the second epoch the pessimistic side of k = 0 is clipped (zero gradient) and k = 1 never is.
    algo = make_dppo(ft_steps=2, clip_coef=10.0, clip_coef_base=1e-6, gamma_denoising=1.0, norm_adv=False,
                     batch_size=10_000, update_epochs=2, actor_lr=1e-2)
    adv = torch.randn(128, generator=torch.Generator().manual_seed(1))
    st = bandit_storage(algo, bandit_obs(128), lambda a: adv)
    records = spy_dppo_update(algo, monkeypatch)
    algo.update(st)
    assert len(records) == 2
    rec = records[1]
    k = chain_index(st.extras["chains"][:, 0], rec["x_k"])
    r, a, g = rec["ratio"], rec["adv"], rec["grad"]
    # a pair whose every log-density element sits at the [−5, 2] clamp keeps r = 1, and one within float rounding of
    # 1 ± 1e-6 is ambiguous: leave both out
    moved = (r - 1).abs() > 1e-4
    pessimistic = ((a > 0) & (r > 1)) | ((a < 0) & (r < 1))
    first, last = (k == 0) & moved, (k == 1) & moved
    assert int(first.sum()) > 40 and int(last.sum()) > 40
    assert bool((g[last] != 0).all())  # ε = 10: never clipped
    assert bool((g[first & pessimistic] == 0).all()) and bool((g[first & ~pessimistic] != 0).all())
    assert int((first & pessimistic).sum()) > 10  # the clip of k = 0 did matter


# ---- 5. FPO++: only ℓ_old is clamped --------------------------------------------------------------------------------
def test_fpo_plus_plus_clamps_only_the_old_loss():
    # FPO++ (clamp_old_cfm_loss = 4): ℓ_old = 5 → 4, ℓ_θ = 6 untouched → ρ = exp(4 − 6) = 0.135 < 1
    new = torch.tensor([[6.0]], requires_grad=True)
    ratio = fpo_log_ratio(torch.tensor([[5.0]]), new, True, 4.0, 5.0).exp()
    assert ratio.item() == pytest.approx(math.exp(-2.0), rel=1e-6)
    # with a positive advantage the loss −Â·ρ has d/dℓ_θ = Â·ρ > 0: gradient descent pulls ℓ_θ back down
    fpo_policy_loss(ratio, torch.tensor([[1.0]]), 0.05, "aspo").backward()
    assert new.grad.item() == pytest.approx(math.exp(-2.0), rel=1e-5)


# ---- 6. learning-rate annealing, entropy bonus, advantage normalisation -------------------------------------------
def test_lr_anneals_linearly_per_update_and_keeps_each_group_ratio(tmp_path, monkeypatch):
    """A tiny DPPO run (actor 1e-3, critic 4e-3) of 4 iterations × 8 env steps with anneal_lr: update j (0-based)
    runs at base·(1 − j/4) for the actor and 4× that for the critic (the runner sets the rate before each rollout)."""
    from stack.config import EnvConfig, TrainConfig
    from stack.train import train

    seen: list[tuple[float, float]] = []
    real_update = DPPO.update

    def update(self, storage):
        seen.append((self.actor_optimizer.param_groups[0]["lr"], self.critic_optimizer.param_groups[0]["lr"]))
        return real_update(self, storage)

    monkeypatch.setattr(DPPO, "update", update)
    cfg = TrainConfig(algo="dppo", policy="diffusion", seed=0, env=EnvConfig(task="point_mass", num_envs=2,
                                                                               backend="sync"),
                      dppo=DPPOConfig(act_steps=1, rollout_steps=4, ft_denoising_steps=2, batch_size=16,
                                      update_epochs=1, horizon=1, denoising_steps=2, actor_hidden=(8, 8, 8),
                                      critic_hidden=(8, 8, 8), actor_lr=1e-3, critic_lr=4e-3, anneal_lr=True),
                      total_env_steps=32, eval_every=0, eval_episodes=1, checkpoint_every=0, runs_dir=str(tmp_path),
                      name="anneal", progress=False, tensorboard=False)
    train(cfg)
    assert [a for a, _ in seen] == pytest.approx([1e-3, 0.75e-3, 0.5e-3, 0.25e-3])
    assert [c for _, c in seen] == pytest.approx([4e-3, 3e-3, 2e-3, 1e-3])


def test_set_learning_rate_keeps_the_ratio_of_every_parameter_group():
    torch.manual_seed(0)
    cfg = FPOConfig(lr=2e-4, critic_lr=1e-3, hidden=(8, 8))
    fpo = FPO(build_flow_policy(cfg, OBS_DIM, ACT_DIM), ValueNet(OBS_DIM, (8,)), cfg)
    fpo.set_learning_rate(1e-4)
    assert [g["lr"] for g in fpo.optimizer.param_groups] == pytest.approx([1e-4, 5e-4])
    assert fpo.learning_rate == pytest.approx(1e-4)


def test_a_positive_entropy_bonus_raises_the_entropy():
    torch.manual_seed(0)
    policy = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(16,), log_std_init=-0.5)
    algo = PPO(policy, ValueNet(OBS_DIM, (16,), "tanh"),
               PPOConfig(lr=1e-2, update_epochs=1, num_minibatches=1, ent_coef=0.1))
    obs = bandit_obs(64)
    with torch.no_grad():
        before = float(policy.entropy(obs[:1]))
    algo.update(bandit_storage(algo, obs, lambda a: torch.zeros(len(a))))  # no advantage signal at all
    with torch.no_grad():
        assert float(policy.entropy(obs[:1])) > before + 1e-3


def test_normalize_advantages_gives_mean_zero_std_one():
    adv = 5.0 + 3.0 * torch.randn(1000, generator=torch.Generator().manual_seed(0))
    out = normalize_advantages(adv)
    assert abs(float(out.mean())) < 1e-6 and float(out.std()) == pytest.approx(1.0, abs=1e-5)


def _spy_arg(monkeypatch, module, name: str, index: int) -> list[torch.Tensor]:
    """Record argument ``index`` of every call of ``module.name`` (as the algorithm's module-level global)."""
    seen: list[torch.Tensor] = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        seen.append(args[index].detach().clone())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen


def _skewed_advantages(a: torch.Tensor) -> torch.Tensor:
    return 5.0 + 3.0 * a[:, 0] + torch.linspace(0.0, 4.0, len(a))


@pytest.mark.parametrize("norm_adv", [True, False])
def test_ppo_normalises_advantages_per_minibatch(monkeypatch, norm_adv):
    torch.manual_seed(0)
    algo = PPO(GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(8,)), ValueNet(OBS_DIM, (8,), "tanh"),
               PPOConfig(update_epochs=1, num_minibatches=4, norm_adv=norm_adv))
    st = bandit_storage(algo, bandit_obs(64), _skewed_advantages)
    seen = _spy_arg(monkeypatch, ppo_mod, "ppo_clip_loss", 1)
    algo.update(st)
    assert len(seen) == 4 and all(len(a) == 16 for a in seen)
    for a in seen:  # each minibatch standardised on its own (the module docstring: "per minibatch")
        if norm_adv:
            assert abs(float(a.mean())) < 1e-5 and float(a.std()) == pytest.approx(1.0, abs=1e-4)
        else:
            assert float(a.mean()) > 4.0
    raw = torch.sort(torch.cat(seen)).values
    if not norm_adv:
        torch.testing.assert_close(raw, torch.sort(st.advantages.reshape(-1)).values)


def test_fpo_normalises_advantages_per_minibatch(monkeypatch):
    torch.manual_seed(0)
    cfg = FPOConfig(update_epochs=1, num_minibatches=4, hidden=(8, 8), n_mc=2, euler_steps=2)
    algo = FPO(build_flow_policy(cfg, OBS_DIM, ACT_DIM), ValueNet(OBS_DIM, (8,)), cfg)
    st = bandit_storage(algo, bandit_obs(64), _skewed_advantages)
    seen = _spy_arg(monkeypatch, fpo_mod, "fpo_policy_loss", 1)
    algo.update(st)
    assert len(seen) == 4 and all(a.shape == (16, 1) for a in seen)
    for a in seen:
        assert abs(float(a.mean())) < 1e-5 and float(a.std()) == pytest.approx(1.0, abs=1e-4)


def test_dppo_normalises_advantages_per_minibatch_of_pairs(monkeypatch):
    algo = make_dppo(ft_steps=2, batch_size=32, update_epochs=1)
    st = bandit_storage(algo, bandit_obs(64), _skewed_advantages)
    inputs = _spy_arg(monkeypatch, dppo_mod, "normalize_advantages", 0)
    algo.update(st)
    assert len(inputs) == 4 and all(len(a) == 32 for a in inputs)  # 64·2 pairs in minibatches of 32
    assert all(float(a.mean()) > 4.0 for a in inputs)  # the raw advantages of the minibatch's pairs


# ---- 7. fine-tuning that cannot move the policy reproduces the BC evaluation exactly -------------------------------
@pytest.fixture(scope="module")
def point_mass_demos(tmp_path_factory):
    """Six point-mass episodes of a noisy PD controller (enough for a BC run to have data; quality is irrelevant)."""
    from sim.tasks.point_mass import PointMassTask
    from stack.data import EpisodeWriter

    root = tmp_path_factory.mktemp("demos") / "pm"
    env, rng = PointMassTask(max_episode_steps=20), np.random.default_rng(0)
    writer = EpisodeWriter.for_task(root, "point_mass", env)
    for ep in range(6):
        obs, _ = env.reset(seed=ep)
        done = False
        while not done:
            a = np.clip(-3.0 * obs[:2] - 2.0 * obs[2:] + rng.normal(0, 0.3, 2), -2, 2)
            nxt, r, term, trunc, info = env.step(a)
            writer.add_step(obs, a, r, terminated=term, truncated=trunc, success=info["success"])
            obs, done = nxt, term or trunc
        writer.end_episode()
    return writer.close()


FINETUNE = {
    # algo: (BC policy family, BC policy kwargs, the fine-tuning section with its learning rates)
    "dppo": ("diffusion", {"hidden": (16, 16, 16), "denoising_steps": 4},
             lambda **lr: DPPOConfig(act_steps=2, rollout_steps=4, ft_denoising_steps=2, batch_size=16,
                                     update_epochs=2, critic_hidden=(16, 16, 16), **lr)),
    "fpo": ("flow", {"hidden": (16, 16), "euler_steps": 3},
            lambda **lr: FPOConfig(rollout_steps=4, num_minibatches=2, update_epochs=2, n_mc=2,
                                   critic_hidden=(16, 16), **lr)),
}


def _bc_then_finetune(tmp_path, demos, algo: str, **section_kw) -> tuple[list[float], list[float]]:
    """A 20-step BC run, a 2-iteration fine-tuning run from it, and both evaluated on the same 4 env seeds with the
    same sampling noise → (BC returns, fine-tuned returns) per episode."""
    from stack.config import EnvConfig, TrainConfig
    from stack.controller import PolicyController
    from stack.evaluate import evaluate
    from stack.train import train

    family, kwargs, section = FINETUNE[algo]
    common = dict(runs_dir=str(tmp_path), progress=False, tensorboard=False, eval_episodes=0, seed=0)
    bc = train(TrainConfig(algo="bc", policy=family, dataset=str(demos), name="bc", **common,
                           bc=BCConfig(horizon=2, act_steps=2, grad_steps=20, batch_size=32, log_every=20,
                                       policy_kwargs=kwargs)))
    ft = train(TrainConfig(algo=algo, policy=family, init_from=str(bc), name="ft", **{**common, "eval_episodes": 1},
                           env=EnvConfig(task="point_mass", num_envs=2, backend="sync"),
                           total_env_steps=32, eval_every=0, checkpoint_every=0, **{algo: section(**section_kw)}))

    def returns(run) -> list[float]:
        return evaluate(PolicyController.from_checkpoint(run, seed=77), "point_mass", 4, seed=77)["returns"]

    return returns(bc), returns(ft)


@pytest.mark.parametrize("algo", ["dppo", "fpo"])
def test_finetuning_with_learning_rate_zero_reproduces_the_bc_evaluation(tmp_path, point_mass_demos, algo):
    lr = {"actor_lr": 0.0, "critic_lr": 0.0} if algo == "dppo" else {"lr": 0.0, "critic_lr": 0.0}
    before, after = _bc_then_finetune(tmp_path, point_mass_demos, algo, **lr)
    assert after == before


def test_dppo_critic_only_finetuning_reproduces_the_bc_evaluation(tmp_path, point_mass_demos):
    # the actor never steps (every iteration a critic warm-up one): the fine-tuned policy — the frozen copy plus the
    # untouched fine-tuned copy, sampled by its own evaluation chain — must act exactly as the BC policy did
    before, after = _bc_then_finetune(tmp_path, point_mass_demos, "dppo", n_critic_warmup_itr=100)
    assert after == before
