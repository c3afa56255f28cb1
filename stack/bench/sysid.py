"""``r2s bench sysid``: fit a perturbed SO-101 model from synthetic "real" logs and say how close the fit came.

The "real" robot is the SO-101 model with a nominal friction loss of ``FRICTION_NOMINAL`` per joint (the model has
none) and, per joint, damping, friction loss, armature and servo gain each scaled by a factor in [0.7, 1.3], one
command delay of 1-3 physics substeps, and Gaussian noise sigma = 0.002 rad on the measured positions (sampled at the
control rate, as a bag's observations are). Excitation: the commands of a few reach episodes (the task's baseline
controller) plus a chirp on the five arm joints. The fit starts from the nominal model (``sim.sysid.fit``).
"""

from __future__ import annotations

import time

import numpy as np

FRICTION_NOMINAL = 0.05
"""N·m: the friction loss the bench's nominal model (and its "real" robot, perturbed) carries."""
NOISE_STD = 0.002
PERTURB = 0.3


def _episodes(n: int, steps: int, seed: int):
    """(commands [T, 6], q0 [6]) of ``n`` reach episodes run by the task's baseline controller."""
    from sim.registry import make_task

    env = make_task("reach", max_episode_steps=steps)
    out = []
    for e in range(n):
        obs, _ = env.reset(seed=seed * 100 + e)
        q0 = env.data.qpos[:6].copy()
        cmds = []
        for _ in range(steps):
            a = env.check_action(env.baseline(obs))
            cmds.append(a)
            obs, *_ = env.step(a)
        out.append((np.array(cmds), q0))
    env.close()
    return out


def _chirp(steps: int, period: float, rng: np.random.Generator):
    """A 0.2 → 3 Hz chirp of 0.35 rad about home on the five arm joints (phases drawn per joint)."""
    from robots.so101 import HOME

    t = np.arange(steps) * period
    phase = 2 * np.pi * np.cumsum(0.2 + 2.8 * t / t[-1]) * period
    cmds = np.tile(np.array(HOME), (steps, 1))
    for j in range(5):
        cmds[:, j] += 0.35 * np.sin(phase + rng.uniform(0, 2 * np.pi))
    return cmds, np.array(HOME)


def _one(seed: int, quick: bool) -> dict:
    from sim import sysid as S

    t0 = time.time()
    rng = np.random.default_rng(seed)
    base = {"robot": "so101", "joints": {j: {"frictionloss": FRICTION_NOMINAL} for j in S.Arm("so101").joints}}
    arm = S.Arm("so101", base)
    period = arm.spec.control_period_s
    n_ep, ep_steps, chirp_steps = (2, 50, 160) if quick else (4, 100, 400)
    pieces = _episodes(n_ep, ep_steps, seed) + [_chirp(chirp_steps, period, rng)]
    template = [S.Segment(c, np.arange(1, len(c) + 1) * period, np.zeros_like(c), q0) for c, q0 in pieces]
    nominal = arm.values()
    true = {k: v * rng.uniform(1 - PERTURB, 1 + PERTURB, size=v.shape) for k, v in nominal.items()}
    delay = int(rng.integers(1, 4))
    real = S.simulate("so101", template, true, delay=delay, noise_std=NOISE_STD, seed=seed + 1, base_overlay=base)
    res = S.fit("so101", real, start_overlay=base)
    errs = {f"{j}.{k}": float(abs(res.fitted[k][i] - true[k][i]) / true[k][i])
            for k in true for i, j in enumerate(res.joints)}
    identified = [name for name in errs if name not in res.unidentified]
    before = float(np.sqrt(np.mean(res.tracking_before ** 2)))
    after = float(np.sqrt(np.mean(res.tracking_after ** 2)))
    return {
        "param_rel_err_max": max((errs[n] for n in identified), default=float("nan")),
        "unidentified": res.unidentified,
        "tracking_err_before": before,
        "tracking_err_after": after,
        "tracking_cut": before / after if after > 0 else float("inf"),
        "noise_std": NOISE_STD,
        "identified": identified,
        "param_rel_err": errs,
        "ci95_rel": {f"{j}.{k}": float(res.ci95[k][i] / res.fitted[k][i])  # None: infinite (not identifiable)
                     if res.fitted[k][i] > 0 and np.isfinite(res.ci95[k][i]) else None
                     for k in true for i, j in enumerate(res.joints)},
        "delay_true": delay, "delay_estimated": res.delay_substeps, "delay_xcorr": res.delay_xcorr,
        "delay_continuous": res.delay_continuous, "delay_ci95": res.delay_ci95,
        "samples": int(sum(len(s.times) for s in real)), "log_s": float(sum(len(s.commands) for s in real) * period),
        "wall_s": time.time() - t0,
        "targets": {"param_rel_err_max": 0.05, "tracking_cut": 5.0},
    }


def run(quick: bool = False, seeds: list[int] | None = None) -> dict:
    from stack.bench import FULL_SEEDS, over_seeds

    return over_seeds(_one, seeds or ([1] if quick else list(FULL_SEEDS)), quick=quick)


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True)))
