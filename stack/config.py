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
    backend: Literal["pool", "sync"] = "pool"
    """'pool': shared-memory worker processes; 'sync': all envs in the training process."""
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the task (e.g. reward_type: sparse)."""
    randomization: dict[str, Any] = field(default_factory=dict)
    """Domain randomisation (see sim.core.DomainRandomization); empty = off."""


@dataclass
class PPOConfig:
    """Clipped PPO with GAE (Schulman et al. 2017); defaults follow CleanRL's ppo_continuous_action."""

    rollout_steps: int = 256
    """Steps per env per iteration (batch = rollout_steps × num_envs)."""
    lr: float = 3e-4
    """Adam learning rate (actor and critic)."""
    anneal_lr: bool = True
    """Linearly anneal the learning rate to 0 over the run."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE λ."""
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
    norm_obs: bool = True
    """Normalise observations with running statistics (saved with the checkpoint, baked into the export)."""
    norm_reward: bool = True
    """Scale rewards by a running std of the discounted return."""
    clip_obs: float = 10.0
    """Clip normalised observations to ±clip_obs."""
    clip_reward: float = 10.0
    """Clip scaled rewards to ±clip_reward."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of actor and critic."""
    log_std_init: float = 0.0
    """Initial log-std of the Gaussian policy."""


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
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics."""
    log_every: int = 1_000
    """Log a metrics row every this many env steps."""


@dataclass
class TrainConfig:
    """One training run: algorithm, policy, task, budget."""

    algo: Literal["ppo", "bc", "sac", "dppo", "fpo", "habc", "agency"] = "ppo"
    """Training algorithm."""
    policy: Literal["gaussian", "diffusion", "flow"] = "gaussian"
    """Policy family."""
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    total_env_steps: int = 1_000_000
    """Training budget in environment steps."""
    seed: int = 1
    """Seed of the envs, the networks and the sampling."""
    device: str = "cpu"
    """'cpu', 'cuda' or 'auto' (cuda when available)."""
    torch_threads: int = 1
    """torch intra-op threads (1 is fastest for small nets on a shared 2-core box)."""
    eval_every: int = 100_000
    """Evaluate every this many env steps (0 = only at the end)."""
    eval_episodes: int = 5
    """Deterministic evaluation episodes."""
    checkpoint_every: int = 200_000
    """Save a checkpoint every this many env steps (and always at the end)."""
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


# ---- presets ----------------------------------------------------------------------------------------------------
def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


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


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
