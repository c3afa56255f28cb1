"""DPPO: Diffusion Policy Policy Optimization (Ren et al. 2024, arXiv 2409.00588; irom-princeton/dppo).

The two-layer MDP. Every decision (one env observation s) runs a denoising chain x^K → … → x^0 whose last state is an
action chunk; the first ``act_steps`` actions are executed. Each denoising transition is Gaussian,
``x^{k-1} ~ N(μ_θ(x^k, k, s), σ_k²)``, so it is a policy step with an exact log-probability, and the PPO loss treats
every (env step, denoising step) pair as one sample. Only the last K′ = ``ft_denoising_steps`` positions of the chain
are fine-tuned: they run ``policy.ft_net`` (a deep copy of the pretrained denoiser), the earlier ones the frozen
``policy.net`` (``policies.diffusion.FinetunedDiffusionPolicy`` holds both). Only the last K′+1 chain states are stored.

Per update, minibatches of ``batch_size`` (env step × denoising step) pairs drawn uniformly, ``update_epochs`` epochs::

    log π_k   = mean over the executed rows and action dims of clamp(log N(x^{k-1}; μ_θ(x^k), max(σ_k, σ_min)²), −5, 2)
    r         = exp(log π_k − log π_k,old)                         (old: the same function before the update)
    Â         = normalise(A over the minibatch) · γ_denoising^(K′−k−1)     (k = 0 the noisiest fine-tuned step)
    ε_k       = ε_base + (ε − ε_base)·(e^{3k/(K′−1)} − 1)/(e^3 − 1)          (K′ = 1: ε)
    loss      = E[max(−Â r, −Â clip(r, 1 ± ε_k))] + vf_coef·½E[(V(s) − R)²] [+ bc_loss_coef·BC]

with separate AdamW optimisers for the fine-tuned denoiser and the critic, GAE over decisions (γ, λ per chunk) in
``compute_returns``, rewards scaled by the runner's ``RewardScaler``. Exploration: while sampling, every step's std is
floored at ``min_sampling_denoising_std`` and each N(0, 1) draw clipped to ±``randn_clip_value``. Evaluation uses the
policy's evaluation sampler: the DDPM chain as fine-tuned, or DDIM with η = 0.

The reference's weak spots, fixed here as options: truncations bootstrap from the final observation (the runner's
``next_values``), ``max_grad_norm`` clips the actor's and the critic's gradients, K′ = 1 has a clip (ε), and a saved
policy evaluates with both networks.

Agency transfer (agency_dppo, ``stack.algos.agency_on_policy``, ``act_steps`` 1): a rollout with an ``authority`` extra
has the baseline's decisions masked out of the surrogate, KL and clip fraction (advantages normalised over the
learner's pairs); the value loss uses every decision.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from policies.critics import ValueNet
from policies.diffusion import DiffusionPolicy, FinetunedDiffusionPolicy
from stack import distributed
from stack.algos.on_policy import (OnPolicyAlgorithm, explained_variance, masked_mean, normalize_advantages,
                                   ppo_clip_loss, ppo_clip_objective, value_loss)
from stack.config import DPPOConfig  # torch-free, so TrainConfig.dppo can hold it; the paper's Gym defaults


# ---- the loss's pieces (called directly by the tests) ---------------------------------------------------------------
def denoising_discount(k: torch.Tensor, ft_steps: int, gamma_denoising: float) -> torch.Tensor:
    """γ_denoising^(K′ − k − 1) of fine-tuned step k (0 = noisiest): the last step has weight 1."""
    return gamma_denoising ** (ft_steps - 1 - k.to(torch.float32))


def clip_schedule(k: torch.Tensor, ft_steps: int, clip: float, clip_base: float, rate: float) -> torch.Tensor:
    """ε_k = ε_base + (ε − ε_base)·(e^{rate·k/(K′−1)} − 1)/(e^rate − 1); K′ = 1 gives ε (the reference divides by 0)."""
    if ft_steps == 1:
        return torch.full(k.shape, clip, device=k.device)
    frac = k.to(torch.float32) / (ft_steps - 1)
    return clip_base + (clip - clip_base) * torch.expm1(rate * frac) / math.expm1(rate)


def dppo_policy_loss(ratio: torch.Tensor, advantages: torch.Tensor, k: torch.Tensor, cfg: DPPOConfig,
                     ft_steps: int, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate over a minibatch of pairs → (loss, clip fraction): advantages normalised over the minibatch,
    scaled by the denoising discount, clipped with the per-step ε_k. ``rows`` (bool): only those pairs count (agency
    transfer's learner decisions), advantages normalised over them."""
    if cfg.norm_adv:
        advantages = normalize_advantages(advantages, rows)
    advantages = advantages * denoising_discount(k, ft_steps, cfg.gamma_denoising)
    clip = clip_schedule(k, ft_steps, cfg.clip_coef, cfg.clip_coef_base, cfg.clip_coef_rate)
    with torch.no_grad():
        clipfrac = masked_mean(((ratio - 1.0).abs() > clip).float(), rows)
    if rows is None:
        return ppo_clip_loss(ratio, advantages, clip), clipfrac
    return masked_mean(ppo_clip_objective(ratio, advantages, clip), rows), clipfrac


# ---- the algorithm --------------------------------------------------------------------------------------------------
class DPPO(OnPolicyAlgorithm):
    """DPPO on a ``FinetunedDiffusionPolicy`` (frozen ``net`` + trained ``ft_net``) and a ``ValueNet`` on env obs."""

    def __init__(self, policy: FinetunedDiffusionPolicy, critic: nn.Module, cfg: DPPOConfig,
                 device: str | torch.device = "cpu", seed: int = 0):
        if not isinstance(policy, FinetunedDiffusionPolicy):
            raise TypeError(f"DPPO fine-tunes a FinetunedDiffusionPolicy, got {type(policy).__name__} "
                            "(wrap a pretrained DiffusionPolicy with FinetunedDiffusionPolicy.from_pretrained)")
        if not 1 <= cfg.act_steps <= policy.horizon:
            raise ValueError(f"dppo.act_steps={cfg.act_steps}; expected 1 ≤ act_steps ≤ horizon={policy.horizon}")
        if policy.obs_steps != 1:
            raise ValueError(f"DPPO here conditions on one observation; the policy has obs_steps={policy.obs_steps}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.critic = critic.to(self.device)
        self.act_steps = cfg.act_steps
        # The chain that is sampled and fine-tuned (the policy's own defaults are its evaluation sampler).
        self.chain = dict(sampler=policy.ft_sampler, ddim_steps=policy.ft_ddim_steps,
                          eta=cfg.ddim_eta if policy.ft_sampler == "ddim" else None)
        self.num_steps = policy.num_steps(policy.ft_sampler, policy.ft_ddim_steps)
        self.ft_steps = policy.ft_denoising_steps
        self.first_ft = self.num_steps - self.ft_steps
        """Chain position of fine-tuned step k = 0."""
        self._train_nets = policy.chain_nets(policy.ft_sampler, policy.ft_ddim_steps)  # ft_net at i ≥ first_ft
        policy.net.requires_grad_(False)  # the pretrained copy stays frozen
        self.actor_optimizer = torch.optim.AdamW(policy.ft_net.parameters(), lr=cfg.actor_lr,
                                                 weight_decay=cfg.actor_weight_decay)
        self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=cfg.critic_lr,
                                                  weight_decay=cfg.critic_weight_decay)
        self.sample_generator = torch.Generator(device=self.device).manual_seed(seed)
        self.shuffle_generator = torch.Generator().manual_seed(seed + 1)
        self._setup({"actor_optimizer": self.actor_optimizer, "critic_optimizer": self.critic_optimizer},
                    {"sample_generator": self.sample_generator, "shuffle_generator": self.shuffle_generator})
        self.updates = 0

    # ---- acting -------------------------------------------------------------------------------------------------
    def extras_spec(self) -> dict[str, tuple[int, ...]]:
        return {"chains": (self.ft_steps + 1, self.policy.horizon, self.policy.act_dim)}

    def policy_modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "critic": self.critic}

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Sample the training chain (std floor, clipped draws; x^0 not clamped unless ``clamp_action``) → (chunk
        [N, act_steps, A], {"chains": the last K′+1 states [N, K′+1, H, A]}, V(obs) [N]). The collector's
        ``ActionScaler`` clips the chunk on its way to the env only."""
        p, cfg = self.policy, self.cfg
        noise = torch.randn((obs.shape[0], self.num_steps + 1, p.horizon, p.act_dim), generator=self.sample_generator,
                            device=self.device)
        chain = p.sample_chain(obs, noise=noise, min_std=cfg.min_sampling_denoising_std,
                               randn_clip=cfg.randn_clip_value, net_for_step=self._train_nets,
                               clamp_final=cfg.clamp_action, **self.chain)
        return chain[:, -1, : self.act_steps], {"chains": chain[:, self.first_ft:]}, self.critic(obs)

    def eval_sampling(self) -> dict:
        """How a loaded checkpoint samples (meta.json → ``stack.controller``): the policy's evaluation sampler."""
        p = self.policy
        return {"sampler": p.sampler} if p.sampler == "ddpm" else \
            {"sampler": p.sampler, "ddim_steps": p.ddim_steps, "eta": p.eta}

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs)

    # ---- log-probabilities --------------------------------------------------------------------------------------
    def log_prob(self, obs: torch.Tensor, x_k: torch.Tensor, x_prev: torch.Tensor, k: torch.Tensor,
                 net: nn.Module | None = None) -> torch.Tensor:
        """log π of fine-tuned step k (0 = noisiest) → [B]: std floored at min_logprob_denoising_std, elementwise
        clamp, mean over the executed rows and the action dims. ``net``: the fine-tuned copy unless given."""
        cfg = self.cfg
        return self.policy.log_prob(obs, x_k, x_prev, k + self.first_ft, net=self.policy.ft_net if net is None else net,
                                    min_std=cfg.min_logprob_denoising_std, clamp=(cfg.logprob_min, cfg.logprob_max),
                                    steps=self.act_steps, reduce="mean", **self.chain)

    @torch.no_grad()
    def chain_log_probs(self, obs: torch.Tensor, chains: torch.Tensor) -> torch.Tensor:
        """log π of every stored fine-tuned transition: obs [B, obs_dim], chains [B, K′+1, H, A] → [B, K′]."""
        b, kp = chains.shape[0], self.ft_steps
        k = torch.arange(kp, device=self.device).repeat(b)
        obs_r = obs.repeat_interleave(kp, 0)
        x_k = chains[:, :-1].reshape(b * kp, *chains.shape[2:])
        x_prev = chains[:, 1:].reshape(b * kp, *chains.shape[2:])
        n = self.cfg.logprob_batch
        out = [self.log_prob(obs_r[i:i + n], x_k[i:i + n], x_prev[i:i + n], k[i:i + n]) for i in range(0, b * kp, n)]
        return torch.cat(out).reshape(b, kp)

    def bc_loss(self, obs: torch.Tensor) -> torch.Tensor:
        """−log π_ft of chains the frozen policy samples from the same observations (clamped, mean over chunk and
        action dims, all fine-tuned steps): keeps the fine-tuned copy near the pretrained behaviour."""
        p, cfg = self.policy, self.cfg
        with torch.no_grad():
            noise = torch.randn((obs.shape[0], self.num_steps + 1, p.horizon, p.act_dim),
                                generator=self.sample_generator, device=self.device)
            chain = p.sample_chain(obs, noise=noise, net=p.net, min_std=cfg.min_sampling_denoising_std,
                                   randn_clip=cfg.randn_clip_value, clamp_final=cfg.clamp_action,
                                   **self.chain)[:, self.first_ft:]
        b, kp = obs.shape[0], self.ft_steps
        k = torch.arange(kp, device=self.device).repeat(b) + self.first_ft
        lp = p.log_prob(obs.repeat_interleave(kp, 0), chain[:, :-1].reshape(b * kp, *chain.shape[2:]),
                        chain[:, 1:].reshape(b * kp, *chain.shape[2:]), k, net=p.ft_net,
                        min_std=cfg.min_logprob_denoising_std, clamp=(cfg.logprob_min, cfg.logprob_max),
                        reduce="mean", **self.chain)
        return -lp.mean()

    # ---- learning -----------------------------------------------------------------------------------------------
    def update(self, storage) -> dict[str, float]:
        cfg, kp = self.cfg, self.ft_steps
        n = storage.rewards.numel()
        obs = storage.obs.reshape(n, -1)
        chains = storage.extras["chains"].reshape(n, *storage.extras["chains"].shape[2:])
        values, returns = storage.values.reshape(n), storage.returns.reshape(n)
        advantages = storage.advantages.reshape(n)
        train_actor = self.updates >= cfg.n_critic_warmup_itr
        if not train_actor and cfg.critic_warmup_epochs > 0:
            return self._warm_critic(obs, values, returns)
        old_log_probs = self.chain_log_probs(obs, chains)
        # Agency transfer: the baseline's decisions (authority 0; their chains are the unexecuted proposal's) are
        # masked out of the actor's terms; the critic trains on every decision.
        authority = storage.extras.get("authority")
        learner = None if authority is None else authority.reshape(n) > 0.5
        total = n * kp
        # several learner processes: each takes its share of every minibatch of pairs (batch_size in all)
        rank_batch = _rank_share(cfg.batch_size, "dppo.batch_size")
        mb_size = min(rank_batch, total)
        num_mb = max(1, total // rank_batch)  # the reference skips the remainder
        stats: list[torch.Tensor] = []
        first_ratio_dev = math.nan
        epochs, stop = 0, False
        for _ in range(cfg.update_epochs):
            epochs += 1
            perm = torch.randperm(total, generator=self.shuffle_generator).to(self.device)
            for m in range(num_mb):
                idx = perm[m * mb_size:(m + 1) * mb_size]
                i, k = idx // kp, idx % kp  # env step, fine-tuned denoising step
                mb_obs = obs[i]
                new_lp = self.log_prob(mb_obs, chains[i, k], chains[i, k + 1], k)
                log_ratio = new_lp - old_log_probs[i, k]
                rows = None if learner is None else learner[i]
                if rows is not None:
                    log_ratio = torch.where(rows, log_ratio, torch.zeros_like(log_ratio))
                ratio = log_ratio.exp()
                pg_loss, clipfrac = dppo_policy_loss(ratio, advantages[i], k, cfg, kp, rows)
                v_loss = value_loss(self.critic(mb_obs), values[i], returns[i], cfg.clip_vloss_coef)
                loss = pg_loss + cfg.vf_coef * v_loss
                bc = self.bc_loss(mb_obs) if cfg.bc_loss_coef > 0 else torch.zeros((), device=self.device)
                if cfg.bc_loss_coef > 0:
                    loss = loss + cfg.bc_loss_coef * bc
                self.actor_optimizer.zero_grad(set_to_none=True)
                self.critic_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.all_reduce_gradients([*self.policy.ft_net.parameters(), *self.critic.parameters()])
                if cfg.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(self.policy.ft_net.parameters(), cfg.max_grad_norm)
                    nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                if train_actor:
                    self.actor_optimizer.step()
                self.critic_optimizer.step()
                with torch.no_grad():
                    approx_kl = masked_mean((ratio - 1.0) - log_ratio, rows)
                    if not stats:
                        first_ratio_dev = float(distributed.all_max((ratio - 1.0).abs().max()))
                stats.append(torch.stack([pg_loss.detach(), v_loss.detach(), bc.detach(), approx_kl, clipfrac,
                                          ratio.detach().mean()]))
                if cfg.target_kl is not None and float(distributed.all_mean(approx_kl)) > cfg.target_kl:
                    stop = True
                    break
            if stop:
                break
        self.updates += 1
        means = distributed.all_mean(torch.stack(stats).mean(0)).tolist()
        out = dict(zip(("policy_loss", "value_loss", "bc_loss", "approx_kl", "clipfrac", "ratio"), means))
        out["explained_variance"] = explained_variance(values, returns)
        out.update(epochs=float(epochs), minibatches=float(len(stats)), first_ratio_dev=first_ratio_dev,
                   last_approx_kl=float(distributed.all_mean(stats[-1][3])))
        return out

    def _warm_critic(self, obs: torch.Tensor, values: torch.Tensor, returns: torch.Tensor) -> dict[str, float]:
        """A critic-only iteration: ``critic_warmup_epochs`` epochs of ½(V − R)² over the rollout's decisions (R: GAE
        returns of the pretrained policy's rollout). The pair minibatches of ``update`` take a few critic steps per
        iteration — a fresh critic would still be near random when the actor starts."""
        cfg, n = self.cfg, obs.shape[0]
        mb = min(_rank_share(cfg.critic_warmup_batch, "dppo.critic_warmup_batch"), n)
        losses = []
        for _ in range(cfg.critic_warmup_epochs):
            perm = torch.randperm(n, generator=self.shuffle_generator).to(self.device)
            for m in range(max(1, n // mb)):
                i = perm[m * mb:(m + 1) * mb]
                v_loss = value_loss(self.critic(obs[i]), values[i], returns[i], cfg.clip_vloss_coef)
                self.critic_optimizer.zero_grad(set_to_none=True)
                (cfg.vf_coef * v_loss).backward()
                distributed.all_reduce_gradients(self.critic.parameters())
                if cfg.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                self.critic_optimizer.step()
                losses.append(float(v_loss.detach()))
        self.updates += 1
        with torch.no_grad():
            fitted = self.critic(obs)
        return {"value_loss": float(distributed.all_mean(torch.tensor(sum(losses) / len(losses)))),
                "explained_variance": explained_variance(values, returns),
                "explained_variance_after": explained_variance(fitted, returns), "critic_warmup": 1.0,
                "minibatches": float(len(losses))}

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Optimisers, generators and the update count (the networks are saved by the runner: policy_modules)."""
        return {**super().state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.updates = int(state["updates"])


def _rank_share(batch: int, field: str) -> int:
    """One learner process's share of a minibatch of ``batch`` (all of it in a single process)."""
    world = distributed.world_size()
    if batch % world:
        raise ValueError(f"{field}={batch}: with {world} learner processes each takes {field} / {world} of a "
                         f"minibatch; expected a multiple of {world}")
    return batch // world


# ---- construction (the runner's entry point) -------------------------------------------------------------------------
def finetuned_policy(pretrained: nn.Module | None, cfg: DPPOConfig, obs_dim: int, act_dim: int) -> \
        FinetunedDiffusionPolicy:
    """The two-network policy DPPO trains: a pretrained DiffusionPolicy wrapped (both copies start equal), a
    FinetunedDiffusionPolicy taken as is (continued fine-tuning), or a fresh DiffusionPolicy (from scratch)."""
    if isinstance(pretrained, FinetunedDiffusionPolicy):
        policy = pretrained
        want = (cfg.ft_denoising_steps, "ddim" if cfg.use_ddim else "ddpm", cfg.ddim_steps if cfg.use_ddim else None)
        have = (policy.ft_denoising_steps, policy.ft_sampler, policy.ft_ddim_steps)
        if want != have:
            raise ValueError(f"the policy was fine-tuned with (ft_denoising_steps, sampler, ddim_steps)={have}; "
                             f"the config asks for {want}")
    else:
        if pretrained is None:
            pretrained = DiffusionPolicy(obs_dim, act_dim, horizon=cfg.horizon, act_steps=cfg.act_steps,
                                         denoising_steps=cfg.denoising_steps, hidden=cfg.actor_hidden)
        if not isinstance(pretrained, DiffusionPolicy):
            raise TypeError(f"DPPO fine-tunes a diffusion policy; init_from holds a {type(pretrained).__name__}")
        sampler, ddim = ("ddim", cfg.ddim_steps) if cfg.use_ddim else ("ddpm", None)
        policy = FinetunedDiffusionPolicy.from_pretrained(pretrained, cfg.ft_denoising_steps, sampler, ddim,
                                                          act_steps=cfg.act_steps)
    if (policy.obs_dim, policy.act_dim) != (obs_dim, act_dim):
        raise ValueError(f"the pretrained policy has obs_dim={policy.obs_dim}, act_dim={policy.act_dim}; the task "
                         f"has {obs_dim}, {act_dim}")
    return policy


def make_algo(cfg, obs_dim: int, act_dim: int, device: str | torch.device = "cpu",
              pretrained: nn.Module | None = None) -> DPPO:
    """DPPO for the runner: ``cfg`` a TrainConfig (its ``dppo`` section and ``seed``)."""
    d: DPPOConfig = cfg.dppo
    policy = finetuned_policy(pretrained, d, obs_dim, act_dim)
    critic = ValueNet(obs_dim, hidden=d.critic_hidden, activation="mish", residual=True)
    return DPPO(policy, critic, d, device, seed=cfg.seed)


__all__ = ["DPPO", "DPPOConfig", "clip_schedule", "denoising_discount", "dppo_policy_loss", "finetuned_policy",
           "make_algo"]
