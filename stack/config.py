"""Typed configs: dataclasses with a docstring per field, YAML presets in ``stack/configs/``, CLI overrides (tyro).

Nothing here imports torch or a simulator, so ``r2s --help`` and the robot-side commands stay light.
A preset is a YAML file whose keys mirror the dataclass fields (nested sections for nested configs); the CLI
applies it first, then the command-line flags on top, and every run saves the resolved result as config.yaml.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class EnvConfig:
    """Which task to simulate and how many copies in parallel."""

    task: str = "hopper"
    """Task name (see `sim.list_tasks()`): hopper, walker2d, halfcheetah, reach, push."""
    num_envs: int = 8
    """Environments stepped in parallel."""
    num_workers: int | None = None
    """Worker processes of the pool (default: one per core, at most num_envs)."""
    backend: Literal["pool", "sync", "genesis"] = "pool"
    """'pool': shared-memory worker processes; 'sync': all envs in the training process; 'genesis': all envs in one
    Genesis scene in the training process (``sim.genesis_pool.GenesisPool``: reach, hopper, walker2d, halfcheetah;
    the ``genesis`` extra, in its own venv .venv-genesis — ``make test-genesis`` builds it; Genesis' GPU backend when
    ``device`` is cuda, else its CPU one). Evaluation stays on MuJoCo — the simulator ``r2s eval`` and deploy use — so
    ``eval_return`` measures the policy in MuJoCo (Genesis' hopper differs at contacts and joint limits)."""
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the task (e.g. reward_type: sparse)."""
    randomization: dict[str, Any] = field(default_factory=dict)
    """Domain randomisation (see sim.core.DomainRandomization); empty = off."""


@dataclass
class OnPolicyConfig:
    """The fields every on-policy algorithm's section has: what the on-policy runner and the shared pieces of
    ``stack.algos.on_policy`` (GAE, the learning-rate schedule, normalisers) read. Each section sets its defaults."""

    rollout_steps: int = 256
    """Decisions (policy calls) per env per iteration; env steps ≈ rollout_steps × num_envs × act_steps."""
    gamma: float = 0.99
    """Discount (per decision)."""
    gae_lambda: float = 0.95
    """GAE λ."""
    anneal_lr: bool = True
    """Linearly anneal the learning rate(s) to 0 over the run."""
    norm_obs: bool = True
    """Normalise observations with running statistics (saved with the checkpoint, baked into the export; with
    init_from: the pretrained statistics, frozen)."""
    norm_reward: bool = True
    """Scale rewards by a running std of the discounted return (per decision)."""
    reward_scaling: Literal["auto", "per_step", "per_rollout"] = "auto"
    """When the reward std is updated (``stack.normalize.RewardScaler``): 'per_step' (CleanRL: each step is scaled by
    the std so far), 'per_rollout' (DPPO: one std updated from the whole rollout scales all of it); 'auto':
    per_rollout when fine-tuning (init_from), per_step from scratch."""
    clip_obs: float = 10.0
    """Clip normalised observations to ±clip_obs."""
    clip_reward: float = 10.0
    """Clip scaled rewards to ±clip_reward."""


@dataclass
class PPOConfig(OnPolicyConfig):
    """Clipped PPO with GAE (Schulman et al. 2017); defaults follow CleanRL's ppo_continuous_action."""

    rollout_steps: int = 256
    """Steps per env per iteration (batch = rollout_steps × num_envs)."""
    lr: float = 3e-4
    """Adam learning rate (actor and critic)."""
    num_minibatches: int = 32
    """Minibatches per epoch."""
    update_epochs: int = 10
    """Epochs over each batch."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    clip_coef: float = 0.2
    """Ratio clip ε."""
    clip_vloss: bool = True
    """Clip the value loss around the old value prediction."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip."""
    target_kl: float | None = None
    """Stop the epochs of an update early when the approximate KL exceeds this."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of actor and critic."""
    log_std_init: float = 0.0
    """Initial log-std of the Gaussian policy."""
    critic_lr: float | None = None
    """Adam learning rate of the critic (None: ``lr``); annealed in proportion to ``lr``."""
    n_critic_warmup_itr: int = 0
    """Fine-tuning: the first iterations train the critic only (the actor's rollouts are the pretrained policy's), so
    the first actor steps follow advantages of a critic fitted to that policy's returns, not of a random one."""
    critic_warmup_epochs: int = 0
    """In a critic-only iteration: epochs of unclipped value regression over the rollout (``num_minibatches`` a
    epoch); 0: ``update_epochs``."""
    finetune_log_std: float | None = None
    """Fine-tuning (init_from): the pretrained Gaussian's log-std is set to this before the first rollout (its
    exploration noise; None: the one it was saved with)."""
    auto_entropy: bool = False
    """SAC's automatic temperature (Haarnoja et al. 2018b) on the entropy term: the coefficient becomes α = exp(log α),
    one Adam step (rate ``lr``, annealed with it) per minibatch on α·(H[π] − H̄), so α grows while the policy's
    entropy is below ``target_entropy`` and shrinks towards 0 above it; ``ent_coef`` is α's start (> 0)."""
    target_entropy: float | None = None
    """H̄ of ``auto_entropy``, nats per decision (None: −act_dim, SAC's heuristic)."""
    entropy_in_returns: bool = False
    """Entropy-regularised returns (Schulman, Chen & Abbeel 2017): each decision's scaled reward gets −α·log π_old(a|s)
    before GAE, so advantages credit the entropy of later decisions too — the gradient of the entropy-regularised
    return that soft Q-learning's update equals (``stack.algos.soft_q``); without it the bonus is the current step's
    only. α is ``ent_coef`` (or the tuned one), in scaled-reward units: with ``norm_adv`` the loss's entropy term is
    divided by the minibatch's advantage std, as the advantages are."""
    action_baseline: bool = False
    """Action-dependent factorized baselines (Wu et al. 2018, ``stack.algos.action_baseline``): per-dimension
    advantages R − b(s, a_−i, i) from a masked-input baseline fitted like the critic, and a per-dimension clipped
    surrogate over the Gaussian's factors."""


@dataclass
class SACConfig:
    """Soft actor-critic (Haarnoja et al. 2018, with automatic entropy tuning); defaults follow CleanRL's
    sac_continuous_action."""

    buffer_size: int = 1_000_000
    """Replay buffer capacity in transitions."""
    batch_size: int = 256
    """Transitions per gradient step."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak averaging coefficient of the target Q networks."""
    policy_lr: float = 3e-4
    """Adam learning rate of the actor (and of the entropy temperature)."""
    q_lr: float = 1e-3
    """Adam learning rate of the twin Q networks."""
    learning_starts: int = 5_000
    """Env steps of uniformly random actions before learning starts."""
    replay_ratio: float = 1.0
    """Gradient steps per env step (transition)."""
    policy_frequency: int = 2
    """Delayed actor updates: every this many Q steps, this many actor steps (TD3-style, as CleanRL)."""
    alpha: float = 0.2
    """Entropy temperature (initial value when autotune is on)."""
    autotune: bool = True
    """Tune the temperature towards the target entropy −act_dim."""
    actor_update: Literal["sac", "wpo"] = "sac"
    """Actor step: 'sac' (reparameterised, E[α log π − Q]); 'wpo' (Wasserstein policy optimisation, Pfau et al. 2025:
    samples moved along ∇_a Q − α ∇_a log π, Fisher-preconditioned; ``stack.algos.wpo``)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics."""
    log_every: int = 1_000
    """Log a metrics row every this many env steps."""


@dataclass
class FPOConfig(OnPolicyConfig):
    """Flow Policy Optimization (McAllister et al. 2025) with the FPO++ options (Yi, Choi et al. 2026); the algorithm
    is ``stack.algos.fpo``. Defaults are FPO's (DM Control reference: 10 Euler steps, N_mc 8, clip 0.05, actor 4×32
    SiLU, critic 5×256, Adam 3e-4); ``variant: fpo++`` switches the FPO++ options on where they are left at None."""

    variant: Literal["fpo", "fpo++"] = "fpo"
    """'fpo': one ratio per action from the mean CFM losses; 'fpo++': per-sample ratios, ASPO, clamped losses."""
    rollout_steps: int = 256
    """Decisions (policy calls) per env per iteration; env steps ≈ rollout_steps × num_envs × act_steps."""
    lr: float = 3e-4
    """Adam learning rate of the actor (and of the critic unless critic_lr is set)."""
    critic_lr: float | None = None
    """Critic learning rate (None: lr). FPO++ fine-tuning from BC: actor 1e-5, critic 1e-4."""
    anneal_lr: bool = False
    """Linearly anneal the learning rates to 0 over the run (FPO: constant)."""
    num_minibatches: int = 32
    """Minibatches per epoch."""
    update_epochs: int = 16
    """Epochs over each batch (FPO: 16)."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    clip_coef: float = 0.05
    """Ratio clip ε (FPO: 0.05, much smaller than Gaussian PPO's 0.2)."""
    vf_coef: float = 0.5
    """Value loss coefficient on ½·(V − R)² (FPO: 0.25 on (V − R)², the same thing)."""
    clip_vloss: bool = False
    """Clip the value loss around the old prediction (FPO: no)."""
    max_grad_norm: float | None = None
    """Global gradient-norm clip (FPO: none; FPO++ fine-tuning: 1.0)."""
    n_mc: int = 8
    """(τ, ε) pairs drawn per action at rollout time and reused every epoch (N_mc)."""
    tau_sampling: Literal["uniform", "grid"] = "uniform"
    """τ ~ U(0, 1), or uniform over the sampler's Euler grid {1 − k/K}."""
    loss_mode: Literal["epsilon", "velocity"] = "epsilon"
    """CFM loss: 'epsilon' (velocity output supervised as ε-MSE, FPO's default) or 'velocity' (‖v − (ε − a)‖²)."""
    per_sample_ratio: bool | None = None
    """One ratio per (τ, ε) sample, each clipped (FPO++), instead of one from the mean losses (None: by variant)."""
    trust_region: Literal["ppo", "aspo"] | None = None
    """'aspo': PPO-clip for Â ≥ 0, SPO for Â < 0 (FPO++); 'ppo': PPO-clip for all (None: by variant)."""
    loss_clamp: float | None = None
    """Clamp each CFM loss at this before differencing (FPO++: 4; None: by variant; ≤ 0: off)."""
    log_ratio_clamp: float | None = None
    """Clamp the log-ratio to ±this before exp (FPO++: 5; None: by variant; ≤ 0: off)."""
    horizon: int = 1
    """Action chunk predicted per decision from scratch (with init_from: the pretrained policy's)."""
    act_steps: int = 0
    """Actions of the chunk executed per decision (0: the policy's own — from scratch: horizon; with init_from: the
    pretrained policy's act_steps)."""
    euler_steps: int = 10
    """Euler steps of the flow sampler in training (from scratch; with init_from: the pretrained policy's)."""
    eval_steps: int | None = None
    """Euler steps at evaluation (None: euler_steps); any K works at inference."""
    hidden: tuple[int, ...] = (32, 32, 32, 32)
    """Actor (velocity net) hidden widths, from scratch (FPO: 4×32)."""
    activation: str = "silu"
    """Actor activation, from scratch."""
    output_scale: float = 0.25
    """From scratch: the velocity net's output is multiplied by this in every forward pass (FPO: 0.25)."""
    noise_scale: float = 1.0
    """From scratch: the flow's source noise is N(0, noise_scale²I) (FPO: 1); a fresh flow's action std is ≈ this, so
    a comparison with a Gaussian PPO can start both at the same std (``policies/flow.py``)."""
    n_critic_warmup_itr: int = 0
    """Fine-tuning: the first iterations train the critic only (the rollouts are the pretrained flow's), so the first
    actor steps follow advantages of a critic fitted to that flow's returns, not of a random one."""
    critic_warmup_epochs: int = 0
    """In a critic-only iteration: epochs of unclipped value regression over the rollout (``num_minibatches`` a
    epoch); 0: ``update_epochs``."""
    critic_hidden: tuple[int, ...] = (256, 256, 256, 256, 256)
    """Critic hidden widths (FPO: 5×256)."""
    critic_activation: str = "silu"
    """Critic activation."""


@dataclass
class DPPOConfig(OnPolicyConfig):
    """DPPO fine-tuning (Ren et al. 2024; the algorithm is ``stack.algos.dppo``); defaults are the paper's Gym
    (Hopper, Walker2d, HalfCheetah) configs. Defined here, torch-free, so ``TrainConfig`` can hold it."""

    ft_denoising_steps: int = 10
    """K′: the last K′ denoising steps run (and train) the fine-tuned copy."""
    use_ddim: bool = False
    """Fine-tune a DDIM chain of ``ddim_steps`` (pixel tasks) instead of the full DDPM chain (state tasks)."""
    ddim_steps: int = 5
    """DDIM chain length when use_ddim (the paper: 5 = K′)."""
    ddim_eta: float = 1.0
    """DDIM η while training (stochastic); evaluation uses η = 0."""
    act_steps: int = 4
    """Actions of each chunk executed before re-planning (≤ the policy's horizon)."""
    rollout_steps: int = 500
    """Decisions (chunks) per env per iteration."""
    batch_size: int = 50_000
    """Minibatch size in (env step × denoising step) pairs."""
    update_epochs: int = 5
    """Epochs over each rollout."""
    actor_lr: float = 1e-4
    """AdamW learning rate of the fine-tuned denoiser."""
    critic_lr: float = 1e-3
    """AdamW learning rate of the critic."""
    actor_weight_decay: float = 0.0
    """AdamW weight decay of the fine-tuned denoiser."""
    critic_weight_decay: float = 0.0
    """AdamW weight decay of the critic."""
    anneal_lr: bool = False
    """Anneal the learning rates to 0 over the run (the paper keeps them constant)."""
    clip_coef: float = 0.01
    """PPO clip ε of the last denoising step."""
    clip_coef_base: float = 0.01
    """PPO clip of the noisiest fine-tuned step (the schedule rises exponentially to clip_coef)."""
    clip_coef_rate: float = 3.0
    """Rate of the exponential clip schedule."""
    clip_vloss_coef: float | None = None
    """Clip the value loss around the old value (None = off, as the paper)."""
    vf_coef: float = 0.5
    """Value-loss coefficient."""
    gamma_denoising: float = 0.99
    """Denoising discount: the advantage of fine-tuned step k is scaled by gamma_denoising^(K′−k−1)."""
    min_sampling_denoising_std: float = 0.1
    """Floor on every denoising step's std while sampling in training (exploration)."""
    min_logprob_denoising_std: float = 0.1
    """Floor on the std in the log-probability (stability)."""
    randn_clip_value: float = 3.0
    """Clip each N(0, 1) draw of the chain to ±randn_clip_value while sampling in training."""
    clamp_action: bool = False
    """Clamp the training chain's x^0 to ±1 before it is stored (the reference's clamp_action, off: the stored action's
    log-prob is of the unclamped sample; the env receives a clipped copy either way)."""
    logprob_min: float = -5.0
    """Elementwise lower clamp of denoising log-densities."""
    logprob_max: float = 2.0
    """Elementwise upper clamp of denoising log-densities."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    target_kl: float | None = 1.0
    """Stop the update when a minibatch's approximate KL exceeds this (None = never)."""
    max_grad_norm: float | None = None
    """Clip the actor's and the critic's gradient norms (None = off, as the paper)."""
    bc_loss_coef: float = 0.0
    """Weight of the BC regulariser −log π_ft(chain of the frozen policy) (0 = off, as the paper)."""
    n_critic_warmup_itr: int = 0
    """Iterations that train the critic only (their rollouts are the pretrained policy's)."""
    critic_warmup_epochs: int = 0
    """In a critic-only iteration: epochs of value regression over the rollout's decisions (minibatches of
    ``critic_warmup_batch``), instead of the update's few pair minibatches, so a fresh critic is fitted to the
    pretrained policy's returns before the first actor step (0: the ordinary update with the actor frozen)."""
    critic_warmup_batch: int = 256
    """Decisions per minibatch of the critic warm-up."""
    norm_obs: bool = False
    """Running observation normalisation from scratch (with init_from the BC statistics are used, frozen)."""
    critic_hidden: tuple[int, ...] = (256, 256, 256)
    """Critic: residual MLP widths (Mish)."""
    logprob_batch: int = 20_000
    """Pairs per forward pass when recomputing the rollout's log-probabilities (memory only)."""
    # From scratch only (no pretrained policy): the actor is built with these.
    horizon: int = 4
    """Chunk length predicted (from scratch only)."""
    denoising_steps: int = 20
    """K of the DDPM (from scratch only; a pretrained policy brings its own)."""
    actor_hidden: tuple[int, ...] = (512, 512, 512)
    """Denoiser residual MLP widths (from scratch only)."""


@dataclass
class BCConfig:
    """Behaviour cloning of an episode dataset (``TrainConfig.dataset``) into a Gaussian, diffusion or flow policy
    (DPPO's pretraining stage; the algorithm is ``stack.algos.bc``, the loop ``stack.runners.offline``). The run's
    step axis is gradient steps: ``eval_every`` and ``checkpoint_every`` count them."""

    task: str | None = None
    """Task to evaluate in (default: the dataset's task)."""
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the evaluation task (default: what the demos were recorded with)."""
    horizon: int = 4
    """Action chunk predicted per call (diffusion/flow; Gaussian: 1)."""
    act_steps: int = 4
    """Actions of each chunk executed before re-planning (≤ horizon)."""
    obs_steps: int = 1
    """Observations the policy is conditioned on (the last obs_steps)."""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra constructor arguments of the policy (hidden, denoising_steps, euler_steps, activation, …)."""
    batch_size: int = 128
    """Minibatch size (DPPO: 128)."""
    epochs: int = 100
    """Passes over the dataset's frames (used when grad_steps is None)."""
    grad_steps: int | None = None
    """Gradient-step budget; overrides epochs."""
    lr: float = 1e-3
    """Initial AdamW learning rate (DPPO: 1e-3)."""
    lr_final: float = 1e-4
    """Learning rate at the end of the schedule (DPPO: 1e-4)."""
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay from lr to lr_final over the run."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps."""
    weight_decay: float = 1e-6
    """AdamW weight decay (DPPO: 1e-6)."""
    max_grad_norm: float | None = None
    """Clip the global gradient norm (None = off, as DPPO's pretraining)."""
    ema: bool | None = None
    """Keep an EMA of the weights and evaluate/save it (None: on for diffusion and flow, off for Gaussian)."""
    ema_decay: float = 0.995
    """EMA decay per gradient step (DPPO: 0.995)."""
    gaussian_objective: Literal["nll", "mse"] = "mse"
    """Gaussian BC loss: 'mse' of the mean (the std keeps its init) or 'nll' (the std is learned too)."""
    obs_clip: float = 10.0
    """Clip normalised observations to ±obs_clip."""
    obs_std_floor: float = 1e-2
    """Lower bound on the per-dimension observation std used for normalisation."""
    action_key: Literal["action", "action.proposal"] = "action"
    """Column to clone: the executed action, or the demonstrator's proposal (DART demos recorded with noise)."""
    action_bounds: Literal["task", "dataset"] = "task"
    """Min–max bounds of the action scaling: the task's action space (falls back to the dataset where the task's
    bounds are infinite or the task is unknown) or the dataset's min/max."""
    eval_sampler: Literal["ddpm", "ddim"] = "ddpm"
    """Diffusion: sampler used in evaluation."""
    eval_ddim_steps: int | None = None
    """Diffusion with eval_sampler='ddim': number of DDIM steps (η = 0)."""
    eval_zero_noise: bool = True
    """Flow: start the ODE from ε = 0 in evaluation (else from seeded N(0, I))."""
    eval_flow_steps: int | None = None
    """Flow: Euler steps in evaluation (None = the policy's euler_steps)."""
    log_every: int = 200
    """Log the mean bc_loss every this many gradient steps."""


@dataclass
class AgencyConfig:
    """Agency transfer (CALF family, arXiv 2606.09825; ``stack.algos.agency``) and its residual-RL peer, on the SAC
    backbone (``sac`` section): per-step arbitration between the task's baseline controller and the learner, an
    episode-end schedule that hands agency to the learner. The runner is ``stack.runners.arbitrated``; on PPO,
    FPO or DPPO (agency_ppo, agency_fpo, agency_dppo: V(s) certificate, baseline steps masked out of the policy loss)
    it is
    ``stack.runners.arbitrated_on_policy``."""

    p0: float = 0.9
    """Initial relax probability at an episode's start."""
    lam0: float = 0.96
    """Initial per-step decay of the relax probability."""
    anneal_fraction: float = 0.9
    """Fraction of ``total_env_steps`` after which the learner alone acts (the baseline is never called)."""
    delta: float = 0.01
    """Certificate margin Δ: the learner's proposal is certified when its Q beats the episode's best by Δ."""
    window: int = 20
    """Episodes whose mean length sets the schedule's horizon L̄."""
    residual_scale: float = 0.5
    """Residual RL (algo 'residual'): the executed action is baseline + residual_scale · learner (policy units)."""


EVAL_SEED_OFFSET = 1_000_000


def eval_seed(seed: int) -> int:
    """The one evaluation seed rule of r2s: env i of an evaluation is reset with ``eval_seed(seed) + i`` (never a
    training seed), and the policy controller's noise is seeded with the same number."""
    return EVAL_SEED_OFFSET + 1000 * int(seed)


ALGOS = ("ppo", "fpo", "dppo", "sac", "bc", "agency", "residual", "agency_ppo", "agency_fpo", "agency_dppo")
"""Every algorithm ``r2s train`` runs; the runner of each: on-policy (ppo, fpo, dppo), off-policy (sac), offline
(bc), arbitrated off-policy (agency, residual: SAC with the task's baseline), arbitrated on-policy (agency_ppo,
agency_fpo, agency_dppo)."""
ON_POLICY = ("ppo", "fpo", "dppo")
AGENCY_ON_POLICY = {"agency_ppo": "ppo", "agency_fpo": "fpo", "agency_dppo": "dppo"}
"""Agency transfer on an on-policy backbone: algo → the backbone whose section (``ppo``, ``fpo``, ``dppo``) and
algorithm it trains."""


@dataclass
class TrainConfig:
    """One training run: algorithm, policy, task, budget."""

    algo: Literal["ppo", "fpo", "dppo", "sac", "bc", "agency", "residual", "agency_ppo", "agency_fpo",
                  "agency_dppo"] = "ppo"
    """Training algorithm: on-policy (ppo, fpo, dppo), off-policy (sac), offline (bc, from ``dataset``) or with the
    task's baseline on SAC (agency: agency transfer, residual: residual RL) or on PPO / FPO / DPPO
    (agency_ppo, agency_fpo, agency_dppo)."""
    policy: Literal["gaussian", "diffusion", "flow"] = "gaussian"
    """Policy family."""
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    fpo: FPOConfig = field(default_factory=FPOConfig)
    dppo: DPPOConfig = field(default_factory=DPPOConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    agency: AgencyConfig = field(default_factory=AgencyConfig)
    dataset: str | None = None
    """Episode dataset folder (LeRobotDataset v3.0, e.g. written by ``r2s demos``): what BC clones."""
    init_from: str | None = None
    """Fine-tune from this BC run directory (policy weights, observation normalisation — kept frozen — and action
    scaling come from its latest checkpoint); None: train from scratch."""
    total_env_steps: int = 1_000_000
    """Training budget in environment steps."""
    seed: int = 1
    """Seed of the envs, the networks and the sampling."""
    device: str = "cpu"
    """'cpu', 'cuda' or 'auto' (cuda when available)."""
    torch_threads: int = 1
    """torch intra-op threads (1 is fastest for small nets on a shared 2-core box)."""
    workers: str = "local"
    """Where the sim workers run: 'local' (``env.backend``: the worker pool's processes, or this process), 'ray'
    (``sim.ray_pool.RayPool`` actors on a local Ray instance, or the cluster ``RAY_ADDRESS`` names) or
    'ray://HOST:PORT' (RayPool on that Ray cluster through Ray Client; its nodes need the project installed).
    ``env.num_workers`` is the number of actors (default: one per CPU of the cluster, at most num_envs). Trajectories
    are the local pool's, bit for bit."""
    nproc: int = 1
    """Learner processes on this machine (``r2s train`` starts them with ``torchrun --standalone``; gloo on CPU, NCCL
    on CUDA): ``env.num_envs`` is split evenly among them (each rank steps its own envs, seeded as env
    rank·num_envs/nproc + i of one pool) and every gradient step averages theirs, so the batch and minibatches stay
    the run's total. Under an outer torchrun (``WORLD_SIZE`` set, e.g. several hosts) its world size is used. PPO, FPO
    and DPPO (``stack.distributed``)."""
    eval_every: int = 100_000
    """Evaluate every this many steps of the run's axis — env steps, gradient steps for BC (0 = only at the end).
    Evaluation env i is reset with seed 1_000_000 + 1000·seed + i (``stack.runners.eval_seed``), never a training
    seed, and the policy's noise is seeded with the same number."""
    eval_episodes: int = 5
    """Evaluation episodes (deterministic or zero-noise where the policy allows)."""
    checkpoint_every: int = 200_000
    """Save a checkpoint every this many steps of the run's axis (and always at the end)."""
    keep_checkpoints: bool = False
    """Also keep every periodic checkpoint as checkpoints/step_<N>/ (e.g. to pick a "medium" demonstrator)."""
    video: bool = False
    """Write an MP4 of one evaluation episode at the end."""
    name: str | None = None
    """Run name (default: algo-task-timestamp)."""
    runs_dir: str = "runs"
    """Parent folder of run directories."""
    resume: str | None = None
    """Resume from this run directory's latest checkpoint."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Also write TensorBoard events (when tensorboard is installed)."""
    seeds: tuple[int, ...] = ()
    """Train once per seed (``--seeds 1 2 3``) into runs/<name>/seed-<s>/ and aggregate them (mean ± standard error
    across seeds: seeds.csv, summary.json, learning_curve.png); empty: one run with ``seed``."""

    @property
    def on_policy_algo(self) -> str:
        """The on-policy algorithm ``algo`` trains: itself, or an agency algo's backbone (agency_ppo → ppo)."""
        backbone = AGENCY_ON_POLICY.get(self.algo, self.algo)
        if backbone not in ON_POLICY:
            raise ValueError(f"algo={self.algo!r} has no on-policy section; expected one of "
                             f"{ON_POLICY + tuple(AGENCY_ON_POLICY)}")
        return backbone

    @property
    def on_policy(self) -> OnPolicyConfig:
        """The on-policy algorithm's own section (``ppo``, ``fpo`` or ``dppo``; agency_ppo's is ``ppo``)."""
        return getattr(self, self.on_policy_algo)


# ---- presets ----------------------------------------------------------------------------------------------------
def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def split_preset(argv: list[str]) -> tuple[dict | None, list[str]]:
    """``[--preset NAME_OR_PATH] [flags]`` → (the preset's values or None, the remaining flags). Shared by every
    command whose typed config takes a preset (the preset's values first, the flags on top)."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    known, rest = pre.parse_known_args(argv)
    return (load_preset(known.preset) if known.preset else None), rest


def load_preset(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.exists():
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"preset: no preset {name_or_path!r}; known presets are {list_presets()}")
    with open(path) as f:
        return yaml.safe_load(f) or {}


def from_dict(cls, data: dict | None, base=None):
    """Build dataclass ``cls`` from a (possibly partial, nested) dict on top of ``base`` (default: cls()).

    Unknown keys are refused with the field path, so a typo in a preset never passes silently.
    """
    obj = base if base is not None else cls()
    if not data:
        return obj
    known = {f.name: f for f in dataclasses.fields(cls)}
    updates = {}
    for key, value in data.items():
        if key not in known:
            raise ValueError(f"config: unknown field {cls.__name__}.{key}; expected one of {sorted(known)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            updates[key] = from_dict(type(current), value, current)
        elif isinstance(current, tuple) and isinstance(value, list):
            updates[key] = tuple(value)
        else:
            updates[key] = value
    return dataclasses.replace(obj, **updates)
