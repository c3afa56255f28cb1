"""Proximal policy optimisation with the clipped surrogate (Schulman et al. 2017, eq. 7) and GAE.

The algorithm owns acting and updating (rsl_rl's seam); the runner (``stack.runners.on_policy``) owns the loop,
normalisers, logging and checkpoints; storage lives in ``stack.rollout``; GAE, the learning-rate schedule and the
clip and value losses are the shared on-policy pieces (``stack.algos.on_policy``).
Defaults are CleanRL's ``ppo_continuous_action`` (``stack.config.PPOConfig``).

Per update, for ``update_epochs`` epochs over ``num_minibatches`` shuffled minibatches of the rollout::

    r_t(θ)   = π_θ(a_t|s_t) / π_old(a_t|s_t)                  (a_t the raw Gaussian sample, see stack.rollout)
    L^CLIP   = E[ max(−Â_t r_t, −Â_t clip(r_t, 1−ε, 1+ε)) ]    ppo_clip_loss
    L^V      = ½ E[ max((V−R)², (V_old + clip(V−V_old, ±ε) − R)²) ]   value_loss (unclipped: ½ E[(V−R)²])
    loss     = L^CLIP − α · H[π_θ] + c_v · L^V                 (α = c_ent, or SAC's tuned temperature)

with advantages normalised per minibatch, the global gradient norm clipped to ``max_grad_norm``, and the epochs cut
short when the approximate KL ``E[(r − 1) − log r]`` (Schulman's k3 estimator, as CleanRL) of an epoch's last
minibatch exceeds ``target_kl``.

Fine-tuning a pretrained actor (DPPO's recipe, ``stack.algos.dppo``): the first ``n_critic_warmup_itr`` updates
train the critic only, on unclipped ½(V − R)² (the value clip would hold a fresh critic within ±ε of its random
start), so the actor's first step follows advantages of a critic fitted to the pretrained policy's returns; the
critic may have its own rate (``critic_lr``).

Agency transfer (``stack.algos.agency_on_policy``): a rollout whose extras hold ``authority`` (1 learner, 0 baseline)
has its baseline steps masked out of the actor's terms — surrogate, entropy, KL and clip fraction are means over the
learner's steps, advantages normalised over them — while the value loss (and GAE) uses every step.

Entropy regularisation as SAC tunes it (``ppo.auto_entropy``, the soft-Q ⇔ PG link of ``stack.algos.soft_q``):
α = exp(log α) takes one Adam step per minibatch on α·(H[π_θ] − H̄) (H̄ = −act_dim by default), and with
``ppo.entropy_in_returns`` the rewards entering GAE become r − α·log π_old(a|s), the entropy-regularised return of
Schulman, Chen & Abbeel (2017) rather than a bonus on the current step only. See docs/soft_q_equivalence.md.

Action-dependent factorized baselines (``ppo.action_baseline``, Wu et al. 2018; the pieces in
``stack.algos.action_baseline``): a masked-input baseline b(s, a_−i, i), in the critic's optimiser group and fitted
like it (½(b_i − R)² · c_v, unclipped), gives per-dimension advantages Â_i = R − b_i(s, a_−i) (computed once per
update, before the epochs, as GAE's are); the surrogate sums a clipped term per Gaussian factor,
Σ_i max(−Â_i r_i, −Â_i clip(r_i, 1 ± ε)) with r_i = π_i(a_i|s) / π_old,i(a_i|s). The KL and clip fraction reported
stay those of the joint ratio. Not combined with agency transfer's authority masks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stack import distributed
from stack.algos.action_baseline import (MaskedActionBaseline, baseline_loss, normalize_per_dimension,
                                         per_dim_log_probs, per_dimension_advantages, per_dimension_clip_loss)
from stack.algos.on_policy import (OnPolicyAlgorithm, explained_variance, masked_mean, normalize_advantages,
                                   ppo_clip_loss, ppo_clip_objective, value_loss)
from stack.config import PPOConfig
from stack.rollout import RolloutStorage


def orthogonal_init(module: nn.Module, gain: float = math.sqrt(2.0), last_gain: float = 1.0) -> nn.Module:
    """CleanRL's ``layer_init``: orthogonal weights (gain √2; ``last_gain`` on the output layer), zero biases."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        nn.init.orthogonal_(layer.weight, last_gain if i == len(linears) - 1 else gain)
        nn.init.zeros_(layer.bias)
    return module


class PPO(OnPolicyAlgorithm):
    """Clipped PPO for a ``policies.GaussianPolicy`` (``squash="clip"``) and a state-value critic ``V(s) -> [B]``.

    In the runner's chunk interface it is the case ``act_steps = 1``: a chunk of one action, and the log-probability
    of the raw sample as the one extra stored per decision.
    """

    act_steps = 1

    def __init__(self, policy: nn.Module, critic: nn.Module, cfg: PPOConfig, device: str | torch.device = "cpu",
                 seed: int = 0):
        if getattr(policy, "squash", "clip") != "clip":
            raise ValueError(f"PPO expects a Gaussian policy with squash='clip', got squash={policy.squash!r}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.critic = critic.to(self.device)
        # Wu et al.'s b(s, a_−i, i) (ppo.action_baseline): the critic's widths and init, fitted beside it.
        self.action_baseline = orthogonal_init(MaskedActionBaseline(policy.obs_dim, policy.act_dim, cfg.hidden)).to(
            self.device) if cfg.action_baseline else None
        critics = [*self.critic.parameters(), *(self.action_baseline.parameters() if self.action_baseline else ())]
        self.critic_parameters = critics
        self.parameters = [*self.policy.parameters(), *critics]
        # One Adam over both networks with eps 1e-5, as CleanRL; the critic a group of its own (its rate may differ).
        # fused: one kernel per step instead of a few per parameter (the update is hundreds of tiny steps).
        critic_lr = cfg.lr if cfg.critic_lr is None else cfg.critic_lr
        self.optimizer = torch.optim.Adam([{"params": list(self.policy.parameters())},
                                           {"params": critics, "lr": critic_lr}],
                                          lr=cfg.lr, eps=1e-5, fused=True)
        self.updates = 0
        """Updates done (critic-only ones included): the first ``n_critic_warmup_itr`` leave the actor as it is."""
        # Own generators, saved with the checkpoint, so a resumed run draws the same actions and minibatches.
        self.sample_generator = torch.Generator(device=self.device).manual_seed(seed)
        shuffle_generator = torch.Generator().manual_seed(seed + 1)
        optimizers = {"optimizer": self.optimizer}
        # SAC's temperature (ppo.auto_entropy): log α, its own Adam; α otherwise the constant ent_coef.
        self.log_alpha: torch.Tensor | None = None
        self._ent_coef = torch.tensor(cfg.ent_coef, device=self.device)  # α when not tuned (built once, not per step)
        self.target_entropy = float(-policy.act_dim if cfg.target_entropy is None else cfg.target_entropy)
        if cfg.auto_entropy:
            if not cfg.ent_coef > 0:
                raise ValueError(f"ppo.ent_coef: auto_entropy starts the temperature α at ent_coef; expected > 0, "
                                 f"got {cfg.ent_coef}")
            self.log_alpha = torch.tensor(math.log(cfg.ent_coef), device=self.device, requires_grad=True)
            optimizers["alpha_optimizer"] = torch.optim.Adam([self.log_alpha], lr=cfg.lr, eps=1e-5)
        self._setup(optimizers, {"sample_generator": self.sample_generator, "shuffle_generator": shuffle_generator})

    @property
    def alpha(self) -> torch.Tensor:
        """The entropy coefficient: exp(log α) under ``auto_entropy`` (detached), else ``ent_coef``."""
        if self.log_alpha is None:
            return self._ent_coef
        return self.log_alpha.detach().exp()

    # ---- acting (the collector's Agent protocol) ----------------------------------------------------------------
    def extras_spec(self) -> dict[str, tuple[int, ...]]:
        return {"log_probs": ()}

    def policy_modules(self) -> dict[str, nn.Module]:
        """The networks the runner checkpoints (``policies.save_policy`` under checkpoints/latest/<name>/)."""
        return {"policy": self.policy, "critic": self.critic}

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Raw Gaussian sample as a chunk of one [N, 1, act_dim], {"log_probs": [N]} and V(obs) [N]."""
        noise = torch.randn(obs.shape[0], self.policy.act_dim, generator=self.sample_generator, device=self.device)
        actions, log_probs = self.policy.sample(obs, noise)
        return actions[:, :1], {"log_probs": log_probs}, self.critic(obs)

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs)

    # ---- learning -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def gae_rewards(self, storage: RolloutStorage) -> torch.Tensor:
        """With ``entropy_in_returns`` GAE runs on soft rewards r − α·log π_old(a|s) (the storage keeps the task's)."""
        if not self.cfg.entropy_in_returns:
            return storage.rewards
        return storage.rewards - self.alpha * storage.extras["log_probs"]

    def update(self, storage: RolloutStorage) -> dict[str, float]:
        """Epochs of minibatch steps on one rollout; returns the update's statistics (means over minibatches run)."""
        # torch.distributions checks its arguments on every construction (a device sync each); off inside the
        # update, where the parameters are known to be valid, and restored afterwards.
        validate = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(False)
        try:
            if self.updates < self.cfg.n_critic_warmup_itr:
                out = self._warm_critic(storage)
            else:
                out = self._update(storage)
        finally:
            torch.distributions.Distribution.set_default_validate_args(validate)
        self.updates += 1
        return out

    def _warm_critic(self, storage: RolloutStorage) -> dict[str, float]:
        """A critic-only update: ``critic_warmup_epochs`` (or ``update_epochs``) epochs of unclipped ½(V − R)² over
        the rollout. Only the critic gets gradients, so Adam leaves the actor (and its moments) untouched."""
        cfg = self.cfg
        b = storage.flat()
        ab = self.action_baseline
        fields = {k: b[k] for k in ("obs", "values", "returns", *(("actions",) if ab is not None else ()))}
        losses: list[torch.Tensor] = []
        for _epoch in range(cfg.critic_warmup_epochs or cfg.update_epochs):
            for mb in self.epoch_minibatches(fields, cfg.num_minibatches):
                v_loss = value_loss(self.critic(mb["obs"]), mb["values"], mb["returns"], None)
                if ab is not None:  # the action-dependent baseline warms up with the critic
                    v_loss = v_loss + baseline_loss(ab, mb["obs"], mb["actions"][:, 0], mb["returns"])
                self.optimizer.zero_grad(set_to_none=True)
                (cfg.vf_coef * v_loss).backward()
                distributed.all_reduce_gradients(self.critic_parameters)
                nn.utils.clip_grad_norm_(self.critic_parameters, cfg.max_grad_norm, foreach=True)
                self.optimizer.step()
                losses.append(v_loss.detach())
        with torch.no_grad():
            fitted = self.critic(b["obs"])
        return {"value_loss": float(distributed.all_mean(torch.stack(losses).mean())),
                "explained_variance": explained_variance(b["values"], b["returns"]),
                "explained_variance_after": explained_variance(fitted, b["returns"]), "critic_warmup": 1.0,
                "std": self._std()}

    def _update(self, storage: RolloutStorage) -> dict[str, float]:
        cfg = self.cfg
        b = storage.flat()
        vclip = cfg.clip_coef if cfg.clip_vloss else None
        stats: list[torch.Tensor] = []
        first_ratio_dev = math.nan
        n = 0
        epochs = 0
        approx_kl = torch.zeros(())
        ab = self.action_baseline
        per_dim: dict[str, torch.Tensor] = {}
        if ab is not None:
            if "authority" in b:
                raise NotImplementedError("ppo.action_baseline: not combined with agency transfer's authority masks "
                                          "(set ppo.action_baseline: false)")
            # π_old's per-dimension log-probabilities (the policy has not moved yet) and Â_i from b before the update
            with torch.no_grad():
                per_dim = {"log_probs_dims": per_dim_log_probs(self.policy, b["obs"], b["actions"][:, 0]),
                           "advantages_dims": per_dimension_advantages(ab, b["obs"], b["actions"][:, 0],
                                                                       b["returns"])}
        b_losses: list[torch.Tensor] = []
        for _epoch in range(cfg.update_epochs):
            epochs += 1
            fields = {k: b[k] for k in ("obs", "actions", "log_probs", "advantages", "values", "returns")}
            fields.update(per_dim)
            if "authority" in b:
                fields["authority"] = b["authority"]
            for mb in self.epoch_minibatches(fields, cfg.num_minibatches):
                obs, actions = mb["obs"], mb["actions"][:, 0]
                # Agency transfer: only the learner's steps (authority 1) have a log-probability under the sampling
                # policy; the baseline's are masked out of every actor term (the critic trains on all steps).
                learner = mb["authority"] > 0.5 if "authority" in mb else None
                dist = self.policy.distribution(obs)
                new_log_probs_dims = dist.log_prob(actions)
                new_log_probs = new_log_probs_dims.sum(-1)
                entropy = masked_mean(dist.entropy().sum(-1), learner)
                new_values = self.critic(obs)
                log_ratio = new_log_probs - mb["log_probs"]
                if learner is not None:
                    log_ratio = torch.where(learner, log_ratio, torch.zeros_like(log_ratio))
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = masked_mean((ratio - 1.0) - log_ratio, learner)
                    clipfrac = masked_mean(((ratio - 1.0).abs() > cfg.clip_coef).float(), learner)
                    if n == 0:
                        first_ratio_dev = float(distributed.all_max((ratio - 1.0).abs().max()))
                adv = mb["advantages"]
                if cfg.norm_adv:
                    adv = normalize_advantages(adv, learner)
                if ab is not None:
                    adv_dims = mb["advantages_dims"]
                    if cfg.norm_adv:
                        adv_dims = normalize_per_dimension(adv_dims)
                    pg_loss = per_dimension_clip_loss(new_log_probs_dims, mb["log_probs_dims"], adv_dims,
                                                      cfg.clip_coef)
                elif learner is None:
                    pg_loss = ppo_clip_loss(ratio, adv, cfg.clip_coef)
                else:
                    pg_loss = masked_mean(ppo_clip_objective(ratio, adv, cfg.clip_coef), learner)
                v_loss = value_loss(new_values, mb["values"], mb["returns"], vclip)
                ent_weight = self.alpha
                if cfg.entropy_in_returns and cfg.norm_adv:
                    # α is in (scaled) reward units in the soft returns; beside advantages divided by their std,
                    # the current step's entropy term is divided by the same std, so both halves of the
                    # entropy-regularised gradient keep their ratio.
                    # (the std normalize_advantages divides by: the learner's rows, every rank's)
                    ent_weight = ent_weight / (distributed.mean_std(mb["advantages"], learner)[1] + 1e-8)
                loss = pg_loss - ent_weight * entropy + cfg.vf_coef * v_loss
                if ab is not None:
                    b_loss = baseline_loss(ab, obs, actions, mb["returns"])
                    loss = loss + cfg.vf_coef * b_loss
                    b_losses.append(b_loss.detach())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # several learner processes: the mean gradient of all ranks' shards, clipped as one minibatch's
                distributed.all_reduce_gradients(self.parameters)
                nn.utils.clip_grad_norm_(self.parameters, cfg.max_grad_norm, foreach=True)
                self.optimizer.step()
                if self.log_alpha is not None:  # SAC's α loss, α·(H − H̄), on the entropy before this step
                    alpha_loss = self.log_alpha.exp() * (entropy.detach() - self.target_entropy)
                    self.optimizers["alpha_optimizer"].zero_grad(set_to_none=True)
                    alpha_loss.backward()
                    distributed.all_reduce_gradients([self.log_alpha])
                    self.optimizers["alpha_optimizer"].step()
                # Kept as tensors (no device sync per minibatch); read once after the update.
                stats.append(torch.stack([pg_loss.detach(), v_loss.detach(), entropy.detach(), approx_kl, clipfrac]))
                n += 1
            approx_kl = distributed.all_mean(approx_kl)  # every rank stops after the same epoch
            if cfg.target_kl is not None and float(approx_kl) > cfg.target_kl:
                break
        means = distributed.all_mean(torch.stack(stats).mean(0)).tolist()
        out = dict(zip(("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"), means))
        out["explained_variance"] = explained_variance(b["values"], b["returns"])
        out["epochs"] = float(epochs)
        out["last_approx_kl"] = float(approx_kl)
        # max |r − 1| over the first minibatch of the first epoch: 0 unless acting and updating disagree.
        out["first_ratio_dev"] = first_ratio_dev
        out["std"] = self._std()
        if self.log_alpha is not None:
            out["alpha"] = float(self.alpha)
        if b_losses:
            out["baseline_loss"] = float(distributed.all_mean(torch.stack(b_losses).mean()))
        return out

    def _std(self) -> float:
        return float(self.policy.log_std.detach().exp().mean()) if hasattr(self.policy, "log_std") else math.nan

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Optimiser, generators and the update count (the networks are saved by the runner: policy_modules)."""
        out = {**super().state_dict(), "updates": self.updates}
        if self.log_alpha is not None:
            out["log_alpha"] = self.log_alpha.detach().clone()
        if self.action_baseline is not None:  # not a policy module: it lives with the optimiser it trains in
            out["action_baseline"] = self.action_baseline.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        if self.log_alpha is not None and "log_alpha" not in state:
            raise KeyError("trainer state: field 'log_alpha' missing (the run was saved with ppo.auto_entropy off)")
        super().load_state_dict(state)
        self.updates = int(state.get("updates", 0))
        if self.log_alpha is not None:
            with torch.no_grad():
                self.log_alpha.copy_(state["log_alpha"])
        if self.action_baseline is not None:
            if "action_baseline" not in state:
                raise KeyError("trainer state: field 'action_baseline' missing (the run was saved with "
                               "ppo.action_baseline off)")
            self.action_baseline.load_state_dict(state["action_baseline"])


# ---- construction (the runner's entry point) -------------------------------------------------------------------------
def make_algo(cfg, obs_dim: int, act_dim: int, device: str | torch.device = "cpu",
              pretrained: nn.Module | None = None) -> PPO:
    """PPO for the runner (``cfg`` a TrainConfig: its ``ppo`` section, ``policy`` and ``seed``). CleanRL's networks:
    tanh MLPs, orthogonal init, state-independent log-std (``ppo.log_std_init``), mean layer gain 0.01, critic output
    gain 1; or a pretrained Gaussian policy (``init_from``)."""
    from policies import GaussianPolicy, ValueNet

    if cfg.policy != "gaussian":
        raise NotImplementedError(f"policy={cfg.policy!r}: PPO trains policy='gaussian' (flow: algo 'fpo', "
                                  "diffusion: algo 'dppo')")
    p = cfg.ppo
    if pretrained is not None:
        if not isinstance(pretrained, GaussianPolicy) or getattr(pretrained, "squash", "clip") != "clip":
            raise TypeError(f"PPO fine-tunes a GaussianPolicy with squash='clip'; init_from holds a "
                            f"{type(pretrained).__name__}")
        policy = pretrained
        if p.finetune_log_std is not None:
            if not hasattr(policy, "log_std"):
                raise ValueError("ppo.finetune_log_std: the pretrained policy's std depends on the observation")
            with torch.no_grad():
                policy.log_std.fill_(p.finetune_log_std)
    else:
        policy = GaussianPolicy(obs_dim, act_dim, hidden=p.hidden, activation="tanh", log_std_init=p.log_std_init,
                                squash="clip")
    critic = orthogonal_init(ValueNet(obs_dim, hidden=p.hidden, activation="tanh"))
    return PPO(policy, critic, p, device, seed=cfg.seed)
