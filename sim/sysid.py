"""Real-to-sim system identification of a position-servo arm from logged commands and joint positions (arrays only).

Given, per log segment, the initial joint state, the joint targets the robot executed (one per control period) and the
joint positions it measured (at any times), this replays the commands through the robot's MuJoCo model, measures the
per-joint tracking error, and fits per joint: DoF damping, friction loss, armature and the servo gain kp, plus one
command delay (in physics substeps) with MuJoCo's own ``mujoco.sysid`` (its ``Parameter``/``ParameterDict``, the
``optimize`` least-squares and ``calculate_intervals`` confidence intervals).

The delay: ``mujoco.sysid``'s ``SignalTransform.delay`` shifts sensor signals only, so this module's own rollout
shifts the *commands*: a first estimate comes from cross-correlating the measured response with the nominal model's
undelayed response (``estimate_delay``), the fit then treats the delay as one continuous parameter (a command
switch that falls inside a substep blends old and new target over it, so the residual is continuous in the delay);
since the other parameters can absorb a wrong delay, a profile over the integer delays near both estimates (delay
held, short refit each) picks the delay, and the best refit, run to convergence, gives the physical parameters'
confidence intervals.

Parameters are fitted as scale factors of a reference (the starting model's value; friction loss, which a model
often leaves at 0, against ``FRICTION_REF``), so the confidence intervals read as relative. A parameter whose 95 %
interval is wider than ``ci_rel_max`` of its value (or infinite: the data do not move it) is *unidentified*: listed,
and left out of the overlay (``SysidResult.overlay``), which ``robots.overlay`` lays over the robot's model.

No bag reading here (``stack.sysid_cmd`` does that); ``sim`` imports only ``robots``.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import mujoco
import mujoco.rollout
import numpy as np

from robots.overlay import JOINT_FIELDS, apply_overlay

FRICTION_REF = 0.05
"""N·m: the scale friction loss is fitted against when the starting model has none (a small servo's gear friction)."""
SCALE_BOUNDS = {"damping": (0.2, 3.0), "frictionloss": (0.0, 6.0), "armature": (0.2, 3.0), "kp": (0.2, 3.0)}
"""Bounds of each parameter's scale factor (of its reference value)."""
CI_REL_MAX = 0.1
"""A parameter is identified when its 95 % confidence half-width is at most this share of its fitted value."""


class SysidUnavailable(ImportError):
    """``mujoco.sysid`` is absent or imported empty (its optional dependencies are not installed)."""


def require_sysid():
    """The ``mujoco.sysid`` module, or ``SysidUnavailable`` saying how to install it."""
    try:
        from mujoco import sysid
    except ImportError as e:  # an older mujoco without the module
        raise SysidUnavailable(f"mujoco.sysid: not importable ({e}); it ships with mujoco >= 4.0: "
                               "pip install 'mujoco[sysid]' (the r2s 'sysid' extra)") from e
    if not hasattr(sysid, "optimize"):
        # mujoco/sysid/__init__.py swallows the ImportError of its extras and exports nothing.
        raise SysidUnavailable("mujoco.sysid imported empty: its optional dependencies (scipy, …) are missing; "
                               "install them with pip install 'mujoco[sysid]' (the r2s 'sysid' extra)")
    return sysid


@dataclass
class Segment:
    """One contiguous stretch of a log (an episode): the arm starts at ``q0`` and command ``commands[i]`` is sent at
    ``i`` control periods after the start; ``qpos[k]`` was measured at ``times[k]`` seconds after the start."""

    commands: np.ndarray
    """[T, J] joint-position targets (rad), the robot's joint order."""
    times: np.ndarray
    """[N] measurement times (s) since the first command, within [0, T control periods]."""
    qpos: np.ndarray
    """[N, J] measured joint positions (rad)."""
    q0: np.ndarray
    """[J] joint positions at the start (the command in force before the first one holds them)."""
    qd0: np.ndarray | None = None
    """[J] joint velocities at the start (None: at rest)."""

    def __post_init__(self):
        self.commands = np.asarray(self.commands, np.float64)
        self.times = np.asarray(self.times, np.float64)
        self.qpos = np.asarray(self.qpos, np.float64)
        self.q0 = np.asarray(self.q0, np.float64)
        j = self.commands.shape[1] if self.commands.ndim == 2 else -1
        if self.commands.ndim != 2 or self.qpos.shape != (len(self.times), j) or self.q0.shape != (j,):
            raise ValueError(f"segment: commands must be [T, J], qpos [N, J] with N = len(times) and q0 [J]; got "
                             f"commands {self.commands.shape}, times {self.times.shape}, qpos {self.qpos.shape}, "
                             f"q0 {self.q0.shape}")
        if not (np.all(np.isfinite(self.commands)) and np.all(np.isfinite(self.qpos))):
            raise ValueError("segment: commands and qpos must be finite (drop steps without a command first)")


class Arm:
    """A robot's MuJoCo model with the index maps the fit needs (joints in the spec's order)."""

    def __init__(self, robot: str, overlay: dict | None = None):
        import robots

        self.spec = robots.get_robot(robot)
        if self.spec.control_mode != "position":
            raise ValueError(f"robot {robot!r}: control_mode is {self.spec.control_mode!r}; sysid fits position "
                             "servos (kp), expected 'position'")
        kind, _, name = self.spec.model_source.partition(":")
        if kind != "r2s":
            raise ValueError(f"robot {robot!r}: model_source {self.spec.model_source!r}; sysid needs an r2s model")
        self.model = mujoco.MjModel.from_xml_path(os.path.join(os.path.dirname(robots.__file__), "assets", name))
        if overlay:
            apply_overlay(self.model, overlay, robot)
        m = self.model
        self.joints = self.spec.joint_names
        jids = [m.joint(n).id for n in self.joints]
        self.qadr, self.dof = m.jnt_qposadr[jids].copy(), m.jnt_dofadr[jids].copy()
        self.act = np.array([_actuator_of(m, j) for j in jids])
        self.frame_skip = int(round(self.spec.control_period_s / m.opt.timestep))
        self.dt = float(m.opt.timestep)

    def values(self, model: mujoco.MjModel | None = None) -> dict[str, np.ndarray]:
        """Per-joint damping, friction loss, armature and kp of ``model`` (default: this arm's)."""
        m = self.model if model is None else model
        return {"damping": m.dof_damping[self.dof].copy(), "frictionloss": m.dof_frictionloss[self.dof].copy(),
                "armature": m.dof_armature[self.dof].copy(), "kp": m.actuator_gainprm[self.act, 0].copy()}

    def with_values(self, values: dict[str, np.ndarray]) -> mujoco.MjModel:
        """A copy of the model with the per-joint ``values`` set (a subset of ``JOINT_FIELDS``)."""
        m = copy.copy(self.model)
        for kind, v in values.items():
            if kind == "kp":
                m.actuator_gainprm[self.act, 0] = v
                m.actuator_biasprm[self.act, 1] = -np.asarray(v)  # bias −kp: the set point stays the target
            else:
                getattr(m, f"dof_{kind}")[self.dof] = v
        return m


def _actuator_of(m: mujoco.MjModel, jid: int) -> int:
    for a in range(m.nu):
        if m.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT and m.actuator_trnid[a, 0] == jid:
            return a
    raise ValueError(f"joint {m.joint(jid).name!r} has no actuator: sysid replays position commands")


# ---- replay -------------------------------------------------------------------------------------------------------
def substep_controls(commands: np.ndarray, hold: np.ndarray, frame_skip: int, delay: float) -> np.ndarray:
    """[T·frame_skip, J] targets per physics substep: command ``i`` takes effect ``delay`` substeps after substep
    ``i·frame_skip``; before the first arrives ``hold`` is in force. A fractional delay blends the two targets of
    the substep the switch falls in (the substep's mean target), so a rollout is continuous in ``delay``."""
    zoh = np.repeat(np.asarray(commands, np.float64), frame_skip, axis=0)
    n, frac = int(np.floor(delay)), float(delay - np.floor(delay))
    padded = np.concatenate([np.tile(hold, (n + 1, 1)), zoh], axis=0)
    late = padded[: len(zoh)]  # shifted by n + 1
    early = padded[1: len(zoh) + 1]  # shifted by n
    return (1.0 - frac) * early + frac * late


def _initial_state(arm: Arm, model: mujoco.MjModel, seg: Segment) -> np.ndarray:
    d = mujoco.MjData(model)
    d.qpos[arm.qadr] = seg.q0
    if seg.qd0 is not None:
        d.qvel[arm.dof] = seg.qd0
    mujoco.mj_forward(model, d)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    state = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, d, state, spec)
    return state


def _dense(arm: Arm, models: list[mujoco.MjModel], delays: list[float], seg: Segment,
           datas: list[mujoco.MjData]) -> tuple[np.ndarray, np.ndarray]:
    """Substep times [K+1] and joint positions [candidate, K+1, J] of each (model, delay) candidate's replay of
    ``seg``: one batched ``mujoco.rollout`` over the candidates."""
    ctrl = np.zeros((len(models), len(seg.commands) * arm.frame_skip, arm.model.nu))
    for c, delay in enumerate(delays):
        ctrl[c][:, arm.act] = substep_controls(seg.commands, seg.q0, arm.frame_skip, delay)
    init = np.stack([_initial_state(arm, m, seg) for m in models])
    state, _ = mujoco.rollout.rollout(models, datas, init, ctrl)
    # FULLPHYSICS state: [time, qpos, …]; the state after substep k is at time (k + 1)·dt.
    times = np.arange(ctrl.shape[1] + 1) * arm.dt
    q = np.concatenate([np.broadcast_to(seg.q0, (len(models), 1, len(seg.q0))), state[:, :, 1 + arm.qadr]], axis=1)
    return times, q


def _at(times: np.ndarray, q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """[K+1, J] joint positions read at times ``t`` (linear between substeps)."""
    return np.stack([np.interp(t, times, q[:, j]) for j in range(q.shape[1])], axis=1)


def replay(arm: Arm, models: list[mujoco.MjModel], delays: list[float], segments: list[Segment],
           nthread: int = 2) -> list[list[np.ndarray]]:
    """Each (model, delay) candidate's joint positions at each segment's measurement times: ``[candidate][segment]
    -> [N, J]``."""
    out: list[list[np.ndarray]] = [[] for _ in models]
    datas = [mujoco.MjData(models[0]) for _ in range(max(1, nthread))]
    for seg in segments:
        times, q = _dense(arm, models, delays, seg, datas)
        for c in range(len(models)):
            out[c].append(_at(times, q[c], seg.times))
    return out


def tracking_error(pred: list[np.ndarray], segments: list[Segment]) -> np.ndarray:
    """Per-joint RMS (rad) of predicted minus measured joint positions over all segments."""
    diff = np.concatenate([p - s.qpos for p, s in zip(pred, segments)], axis=0)
    return np.sqrt(np.mean(diff ** 2, axis=0))


def estimate_delay(arm: Arm, segments: list[Segment], max_delay: int) -> int:
    """The command delay (substeps) by cross-correlation: the lag of the starting model's undelayed response that
    best correlates, increment by increment, with the measured response (the model's own servo lag is thus not
    counted as delay)."""
    datas = [mujoco.MjData(arm.model)]
    dense = [_dense(arm, [arm.model], [0.0], seg, datas) for seg in segments]
    corr = np.zeros(max_delay + 1)
    for lag in range(max_delay + 1):
        num = den_a = den_b = 0.0
        for seg, (times, q) in zip(segments, dense):
            a = np.diff(_at(times, q[0], np.clip(seg.times - lag * arm.dt, 0.0, None)), axis=0)
            b = np.diff(seg.qpos, axis=0)
            num, den_a, den_b = num + np.sum(a * b), den_a + np.sum(a * a), den_b + np.sum(b * b)
        corr[lag] = num / np.sqrt(den_a * den_b + 1e-300)
    return int(np.argmax(corr))


# ---- the fit ------------------------------------------------------------------------------------------------------
@dataclass
class SysidResult:
    robot: str
    joints: tuple[str, ...]
    start: dict[str, np.ndarray]
    """Per-joint values of the starting model."""
    fitted: dict[str, np.ndarray]
    """Per-joint fitted values (every parameter, identified or not)."""
    ci95: dict[str, np.ndarray]
    """Per-joint 95 % confidence half-widths (same units; inf: not identifiable from these data)."""
    identified: dict[str, np.ndarray]
    """Per-joint bool: the half-width is within ``ci_rel_max`` of the value."""
    delay_substeps: int
    delay_continuous: float
    delay_ci95: float
    delay_xcorr: int
    """The cross-correlation estimate the fit started from."""
    substep_s: float
    tracking_before: np.ndarray
    """Per-joint RMS error (rad) of the starting model with no delay."""
    tracking_after: np.ndarray
    """Per-joint RMS error (rad) of the fitted model with the fitted delay."""
    excited: np.ndarray
    """Per-joint bool: the commands moved the joint (else its parameters stayed at the start, unidentified)."""
    pred_before: list[np.ndarray] = field(repr=False, default_factory=list)
    pred_after: list[np.ndarray] = field(repr=False, default_factory=list)

    @property
    def unidentified(self) -> list[str]:
        return [f"{j}.{k}" for k in JOINT_FIELDS for j, ok in zip(self.joints, self.identified[k]) if not ok]

    def overlay(self, source: dict | None = None) -> dict:
        """The robot-spec overlay: identified values only (unidentified ones listed, not written)."""
        joints: dict[str, dict[str, float]] = {}
        for k in JOINT_FIELDS:
            for i, j in enumerate(self.joints):
                if self.identified[k][i]:
                    joints.setdefault(j, {})[k] = float(self.fitted[k][i])
        return {
            "robot": self.robot, "joints": joints, "command_delay_substeps": int(self.delay_substeps),
            "command_delay_s": self.delay_substeps * self.substep_s, "unidentified": self.unidentified,
            "confidence_95": {f"{j}.{k}": float(self.ci95[k][i]) for k in JOINT_FIELDS
                              for i, j in enumerate(self.joints)},
            "tracking_rms_rad": {"before": float(np.sqrt(np.mean(self.tracking_before ** 2))),
                                 "after": float(np.sqrt(np.mean(self.tracking_after ** 2)))},
            **({"source": source} if source else {}),
        }


def _refs(start: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    refs = {k: np.asarray(v, np.float64).copy() for k, v in start.items()}
    refs["frictionloss"] = np.where(refs["frictionloss"] > 0, refs["frictionloss"], FRICTION_REF)
    return refs


EXCITATION_MIN = 0.01
"""rad: a joint whose commands span less than this over the whole log is not excited; its parameters are held at
the starting values (unidentified) instead of letting the optimizer wander along directions the data cannot see."""


def _params(sysid, arm: Arm, start, refs, excited: np.ndarray, delay0: float, max_delay: int, fit_delay: bool):
    params = sysid.ParameterDict()
    for k in JOINT_FIELDS:
        lo, hi = SCALE_BOUNDS[k]
        for i, j in enumerate(arm.joints):
            x0 = float(np.clip(start[k][i] / refs[k][i], lo, hi))
            params.add(sysid.Parameter(f"{j}.{k}", nominal=x0, min_value=lo, max_value=hi, frozen=not excited[i]))
    params.add(sysid.Parameter("command_delay", nominal=float(delay0), min_value=0.0, max_value=float(max_delay),
                               frozen=not fit_delay))
    return params


def _unpack(params, arm: Arm, refs) -> tuple[dict[str, np.ndarray], float]:
    values = {k: np.array([params[f"{j}.{k}"].value[0] for j in arm.joints]) * refs[k] for k in JOINT_FIELDS}
    return values, float(params["command_delay"].value[0])


def _residual_fn(arm: Arm, segments: list[Segment], refs, nthread: int):
    """``(x, params) -> ([residuals], None, None)`` as ``mujoco.sysid.optimize`` calls it; ``x`` is one parameter
    vector or a matrix of them (one per column: the optimizer's finite-difference batch)."""
    measured = np.concatenate([s.qpos.ravel() for s in segments])

    def fn(x, params):
        cols = x.reshape(len(x), -1)
        models, delays = [], []
        for c in range(cols.shape[1]):
            params.update_from_vector(cols[:, c])
            values, delay = _unpack(params, arm, refs)
            models.append(arm.with_values(values))
            delays.append(delay)
        preds = replay(arm, models, delays, segments, nthread)
        res = np.stack([np.concatenate([p.ravel() for p in pred]) - measured for pred in preds], axis=1)
        return [res[:, 0] if x.ndim == 1 else res], None, None

    return fn


def _optimize(sysid, params, fn, max_iters: int):
    """``mujoco.sysid.optimize`` with MuJoCo's Levenberg-Marquardt, its per-iteration printout kept off stdout."""
    import io

    return sysid.optimize(params, fn, optimizer="mujoco", verbose=False, max_iters=max_iters, output=io.StringIO(),
                          xtol=1e-4)


def _intervals(sysid, params, result, fn) -> dict[str, float]:
    """``mujoco.sysid.calculate_intervals`` at the optimum: 95 % half-width per free parameter (scale units)."""
    residuals, _, _ = fn(params.as_vector(), params.copy())
    _, ci = sysid.calculate_intervals(residuals, np.asarray(result.jac))
    return dict(zip(params.get_non_frozen_parameter_names(), np.asarray(ci, np.float64).tolist()))


def fit(robot: str, segments: list[Segment], start_overlay: dict | None = None, max_delay: int | None = None,
        ci_rel_max: float = CI_REL_MAX, max_iters: int = 10, profile_iters: int = 3, nthread: int = 2) -> SysidResult:
    """Fit per-joint damping, friction loss, armature, kp and one command delay of ``robot`` to ``segments``,
    starting from the robot's model (with ``start_overlay`` laid over it, if given)."""
    sysid = require_sysid()
    if not segments:
        raise ValueError("segments: expected at least one log segment, got none")
    arm = Arm(robot, start_overlay)
    for s in segments:
        if s.commands.shape[1] != len(arm.joints):
            raise ValueError(f"segment: commands have {s.commands.shape[1]} joints, robot {robot!r} has "
                             f"{len(arm.joints)} {list(arm.joints)}")
    max_delay = arm.frame_skip if max_delay is None else int(max_delay)
    start = arm.values()
    refs = _refs(start)
    commands = np.concatenate([s.commands for s in segments])
    excited = np.ptp(commands, axis=0) >= EXCITATION_MIN
    pred_before = replay(arm, [arm.model], [0.0], segments, nthread)[0]
    delay0 = estimate_delay(arm, segments, max_delay)
    fn = _residual_fn(arm, segments, refs, nthread)
    # 1. Everything, the delay continuous, from the cross-correlation estimate.
    # (Started half a substep off the bounds: from exactly 0 the finite differences stall the delay there.)
    delay_start = float(np.clip(delay0, 0.5, max_delay - 0.5))
    p1, r1 = _optimize(sysid, _params(sysid, arm, start, refs, excited, delay_start, max_delay, True), fn,
                       max_iters)
    _, delay_cont = _unpack(p1, arm, refs)
    delay_ci = _intervals(sysid, p1, r1, fn)["command_delay"]
    # 2. The parameters can absorb a wrong delay (a local minimum of the continuous fit): a profile over the integer
    # delays near both estimates, each with the delay held and a short refit, picks the delay; the best refit goes on
    # to convergence and gives the physical parameters' confidence intervals there.
    candidates = sorted({c for est in (delay_cont, delay0) for c in range(int(round(est)) - 2, int(round(est)) + 3)
                         if 0 <= c <= max_delay})
    profile = {}
    for c in candidates:
        pc = p1.copy()
        pc["command_delay"].value[:] = c
        pc["command_delay"].frozen = True
        pc, _ = _optimize(sysid, pc, fn, profile_iters)
        res, _, _ = fn(pc.as_vector(), pc.copy())
        profile[c] = (float(np.sum(np.concatenate(res) ** 2)), pc)
    delay = min(profile, key=lambda c: profile[c][0])
    p2, r2 = _optimize(sysid, profile[delay][1], fn, max_iters)
    ci = _intervals(sysid, p2, r2, fn)
    values, _ = _unpack(p2, arm, refs)
    ci95, identified = {}, {}
    for k in JOINT_FIELDS:
        ci95[k] = np.array([ci.get(f"{j}.{k}", np.inf) for j in arm.joints]) * refs[k]
        identified[k] = np.isfinite(ci95[k]) & (ci95[k] <= ci_rel_max * np.abs(values[k])) & (values[k] > 0)
    pred_after = replay(arm, [arm.with_values(values)], [float(delay)], segments, nthread)[0]
    return SysidResult(
        robot=robot, joints=arm.joints, start=start, fitted=values, ci95=ci95, identified=identified,
        delay_substeps=delay, delay_continuous=delay_cont, delay_ci95=float(delay_ci), delay_xcorr=delay0,
        substep_s=arm.dt, tracking_before=tracking_error(pred_before, segments),
        tracking_after=tracking_error(pred_after, segments), excited=excited,
        pred_before=pred_before, pred_after=pred_after)


# ---- synthetic "real" logs and the plot ---------------------------------------------------------------------------
def simulate(robot: str, segments: list[Segment], values: dict[str, np.ndarray] | None = None, delay: float = 0.0,
             noise_std: float = 0.0, seed: int = 0, base_overlay: dict | None = None) -> list[Segment]:
    """``segments`` with their ``qpos`` replaced by what the robot model (with per-joint ``values``, the command
    ``delay`` in substeps and Gaussian measurement noise) measures at their ``times``: synthetic "real" logs."""
    arm = Arm(robot, base_overlay)
    model = arm.with_values(values or {})
    pred = replay(arm, [model], [delay], segments)[0]
    rng = np.random.default_rng(seed)
    return [Segment(s.commands, s.times, p + rng.normal(0.0, noise_std, p.shape) if noise_std else p, s.q0, s.qd0)
            for s, p in zip(segments, pred)]


def plot(result: SysidResult, segments: list[Segment], path: str | os.PathLike, segment: int = 0) -> None:
    """Real vs sim joint trajectories of one segment, before (starting model, no delay) and after the fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seg = segments[segment]
    n = len(result.joints)
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.8 * n), sharex=True)
    for j, ax in enumerate(np.atleast_1d(axes)):
        ax.plot(seg.times, seg.qpos[:, j], "k.", ms=2, label="real (logged)")
        ax.plot(seg.times, result.pred_before[segment][:, j], "-", color="tab:red", lw=1, label="sim before")
        ax.plot(seg.times, result.pred_after[segment][:, j], "-", color="tab:blue", lw=1, label="sim after")
        ax.set_ylabel(f"{result.joints[j]}\n(rad)", fontsize=8)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=7, ncol=3)
    np.atleast_1d(axes)[-1].set_xlabel("time (s)")
    fig.suptitle(f"{result.robot} sysid: RMS tracking {np.sqrt(np.mean(result.tracking_before ** 2)):.4f} → "
                 f"{np.sqrt(np.mean(result.tracking_after ** 2)):.4f} rad, delay {result.delay_substeps} substeps")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


__all__ = ["CI_REL_MAX", "FRICTION_REF", "Arm", "Segment", "SysidResult", "SysidUnavailable", "estimate_delay",
           "fit", "plot", "replay", "require_sysid", "simulate", "substep_controls", "tracking_error"]
