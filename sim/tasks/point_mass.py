"""Point mass: push a unit mass to the origin. A tiny numpy task for CI-sized learning tests (no MuJoCo).

State: position p and velocity v in ``dim`` dimensions. Action: a force in ``[-max_force, max_force]^dim`` (the
bounds are not ±1 on purpose, so the trainer's action scaling is exercised). Dynamics (semi-implicit Euler, dt 0.1):
``v ← damping·v + dt·a``, ``p ← p + dt·v``. Reward ``1 − ‖p‖`` per step; the episode terminates (a true terminal
state, no bootstrap) when any coordinate leaves ``[-bound, bound]`` and is truncated at ``max_episode_steps``.
``info["success"]``: ``‖p‖ < success_radius``. Start: p uniform in ``[-1, 1]^dim``, v = 0.
Uniformly random actions score about 2 over 50 steps; a PD controller (a = −4p − 3v) about 44.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class PointMassTask(gym.Env):
    metadata = {"render_modes": [], "render_fps": 10}

    def __init__(self, dim: int = 2, max_episode_steps: int = 50, max_force: float = 2.0, bound: float = 2.0,
                 damping: float = 0.95, success_radius: float = 0.1, render_mode: str | None = None):
        self.dim = int(dim)
        self.max_episode_steps = int(max_episode_steps)
        self.bound = float(bound)
        self.damping = float(damping)
        self.success_radius = float(success_radius)
        self.dt = 0.1
        self.render_mode = render_mode
        self.action_space = gym.spaces.Box(-max_force, max_force, shape=(self.dim,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2 * self.dim,), dtype=np.float64)
        self._p = np.zeros(self.dim)
        self._v = np.zeros(self.dim)
        self._elapsed = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._p = self.np_random.uniform(-1.0, 1.0, size=self.dim)
        self._v = np.zeros(self.dim)
        self._elapsed = 0
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64), self.action_space.low, self.action_space.high)
        self._v = self.damping * self._v + self.dt * a
        self._p = self._p + self.dt * self._v
        self._elapsed += 1
        dist = float(np.linalg.norm(self._p))
        terminated = bool(np.any(np.abs(self._p) > self.bound))
        truncated = self._elapsed >= self.max_episode_steps and not terminated
        return self._obs(), 1.0 - dist, terminated, truncated, {"success": dist < self.success_radius}

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._p, self._v])

    def render(self):
        return None
