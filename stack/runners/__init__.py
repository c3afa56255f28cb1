"""The runner family (``base``: run directory, evaluation cadence with one seed rule, checkpoints, plots, videos;
``on_policy``: PPO, FPO, DPPO; ``off_policy``: SAC; ``arbitrated``: SAC beside the task's baseline (agency transfer,
residual RL); ``arbitrated_on_policy``: PPO, FPO or DPPO beside it; ``offline``: BC).
``runner_for(cfg)`` picks the one of an algorithm; ``stack.train.train`` runs it."""

from stack.runners.base import EVAL_SEED_OFFSET, TIMING_KEYS, Runner, eval_seed, resolve_device, task_kwargs_of

RUNNER_OF = {"ppo": "on_policy", "fpo": "on_policy", "dppo": "on_policy", "sac": "off_policy", "bc": "offline",
             "agency": "arbitrated", "residual": "arbitrated", "agency_ppo": "arbitrated_on_policy",
             "agency_fpo": "arbitrated_on_policy", "agency_dppo": "arbitrated_on_policy"}


def runner_for(cfg) -> Runner:
    """The runner of ``cfg.algo``, constructed (imports only the family it needs)."""
    if cfg.algo not in RUNNER_OF:
        raise ValueError(f"algo={cfg.algo!r}; r2s trains {sorted(RUNNER_OF)}")
    family = RUNNER_OF[cfg.algo]
    if family == "on_policy":
        from stack.runners.on_policy import OnPolicyRunner as cls
    elif family == "off_policy":
        from stack.runners.off_policy import OffPolicyRunner as cls
    elif family == "arbitrated":
        from stack.runners.arbitrated import ArbitratedRunner as cls
    elif family == "arbitrated_on_policy":
        from stack.runners.arbitrated_on_policy import ArbitratedOnPolicyRunner as cls
    else:
        from stack.runners.offline import OfflineRunner as cls
    return cls(cfg)


__all__ = ["EVAL_SEED_OFFSET", "RUNNER_OF", "TIMING_KEYS", "Runner", "eval_seed", "resolve_device", "runner_for",
           "task_kwargs_of"]
