"""Fingertip kinematics of the SO-101 arm on a private ``MjData``: forward kinematics, Jacobian, damped least squares.

Everything is computed from joint positions alone (no simulator state), so the same code runs beside a real arm:
give it the joint positions from ``/joint_states`` and it answers where the fingertip is and how to move it.
"""

from __future__ import annotations

import numpy as np

from robots.so101 import ARM_JOINTS, EE_SITE, JOINT_NAMES


class ArmKinematics:
    """Forward kinematics and the fingertip Jacobian of the SO-101 model, on its own ``MjData``.

    ``q`` is the 6-vector of joint positions in the spec's order (the gripper entry is ignored; a 5-vector of the arm
    joints is accepted too). The Jacobian has one column per arm joint (``ARM_JOINTS``), so a step ``dq`` from it
    applies to ``q[:5]``.
    """

    def __init__(self, model=None):
        import mujoco

        from robots.so101 import load_model

        self._mj = mujoco
        self.model = model if model is not None else load_model("arm")
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qadr = np.array([m.jnt_qposadr[m.joint(n).id] for n in ARM_JOINTS])
        self._dadr = np.array([m.jnt_dofadr[m.joint(n).id] for n in ARM_JOINTS])
        self._site = m.site(EE_SITE).id
        jids = [m.joint(n).id for n in JOINT_NAMES]
        self.lower = m.jnt_range[jids, 0].copy()
        self.upper = m.jnt_range[jids, 1].copy()
        self._jacp = np.zeros((3, m.nv))
        self._bias = np.zeros(m.nv)
        self._dadr6 = np.array([m.jnt_dofadr[j] for j in jids])
        acts = [m.actuator(n).id for n in JOINT_NAMES]  # the servos are named after their joints
        self._kp = m.actuator_gainprm[acts, 0].copy()

    def _set(self, q: np.ndarray) -> None:
        self.data.qpos[self._qadr] = np.asarray(q, dtype=np.float64)[: len(ARM_JOINTS)]
        self._mj.mj_kinematics(self.model, self.data)

    def fk(self, q: np.ndarray) -> np.ndarray:
        """Fingertip (``ee_site``) position in the world frame for joint positions ``q``."""
        self._set(q)
        return self.data.site_xpos[self._site].copy()

    def jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ee_pos, J)``: the fingertip position and its 3×5 positional Jacobian w.r.t. the arm joints."""
        self._set(q)
        self._mj.mj_comPos(self.model, self.data)
        self._mj.mj_jacSite(self.model, self.data, self._jacp, None, self._site)
        return self.data.site_xpos[self._site].copy(), self._jacp[:, self._dadr].copy()

    def gravity_offset(self, q: np.ndarray) -> np.ndarray:
        """Per-joint offset (rad, 6-vector) that makes the position servos hold ``q`` against gravity.

        A servo with stiffness kp settles where kp · (target − q) equals the gravity torque at ``q``; commanding
        ``q + offset`` puts it at ``q`` instead of sagging below it.
        """
        self._set(q)
        self._mj.mj_comPos(self.model, self.data)
        self._mj.mj_rne(self.model, self.data, 0, self._bias)
        return self._bias[self._dadr6] / self._kp

    @staticmethod
    def pitch(q: np.ndarray) -> float:
        """The gripper's pitch below horizontal (rad): lift, elbow and wrist flex share parallel axes."""
        return float(q[1] + q[2] + q[3])

    def clip(self, q: np.ndarray) -> np.ndarray:
        return np.clip(q, self.lower, self.upper)

    def solve(self, q0: np.ndarray, target: np.ndarray, damping: float = 0.03, iterations: int = 30,
              tol: float = 5e-4, max_step: float = 0.05) -> np.ndarray:
        """Joint positions (6-vector; gripper kept from ``q0``) placing the fingertip at ``target``.

        Damped least squares iterated from ``q0`` (so it lands on the solution branch nearest the current pose),
        each iteration's Cartesian error capped at ``max_step`` and the result clipped to the joint limits.
        Best effort: an unreachable target gives the closest pose the iterations find.
        """
        q = np.array(q0, dtype=np.float64)
        for _ in range(iterations):
            ee, jac = self.jacobian(q)
            err = target - ee
            dist = float(np.linalg.norm(err))
            if dist < tol:
                break
            if dist > max_step:
                err *= max_step / dist
            q[:5] += dls(jac, err, damping)
            np.clip(q, self.lower, self.upper, out=q)
        return q


def dls(jac: np.ndarray, err: np.ndarray, damping: float) -> np.ndarray:
    """Damped least squares: ``dq = Jᵀ (J Jᵀ + λ² I)⁻¹ e``."""
    jjt = jac @ jac.T
    jjt[np.diag_indices_from(jjt)] += damping * damping
    return jac.T @ np.linalg.solve(jjt, err)


def segment_slices(layout) -> dict[str, slice]:
    """Observation slices by segment name from an ``ObsSegment`` layout."""
    out, i = {}, 0
    for seg in layout:
        out[seg.name] = slice(i, i + seg.size)
        i += seg.size
    return out


def require(slices: dict[str, slice], names: tuple[str, ...], who: str) -> None:
    missing = [n for n in names if n not in slices]
    if missing:
        raise ValueError(f"{who}: observation layout lacks segment(s) {missing}; it has {list(slices)}")
