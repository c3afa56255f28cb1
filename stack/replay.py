"""Off-policy storage: a ring buffer of transitions (s, a, r, s', terminated), sampled uniformly, checkpointable.

``s'`` is the state the step really reached (``infos["final_obs"]`` where an episode ended under same-step
autoreset), and only ``terminated`` cuts the bootstrap, so time-limit truncations keep their value. The buffer and its
sampling generator are saved with a checkpoint (``state_dict``), so a resumed SAC run continues on the same data.
"""

from __future__ import annotations

import numpy as np
import torch

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")


class ReplayBuffer:
    """A ring buffer of transitions in numpy (float32), sampled uniformly with its own generator."""

    fields: tuple[str, ...] = FIELDS

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int = 0):
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.actions = np.zeros((self.capacity, act_dim), np.float32)
        self.rewards = np.zeros(self.capacity, np.float32)
        self.terminated = np.zeros(self.capacity, np.float32)
        self.size = 0
        self._next = 0
        self.rng = np.random.default_rng(seed)

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        """Add a batch of N transitions (one vector-env step)."""
        n = len(rewards)
        idx = (self._next + np.arange(n)) % self.capacity
        self.obs[idx], self.actions[idx], self.rewards[idx] = obs, actions, rewards
        self.next_obs[idx], self.terminated[idx] = next_obs, terminated
        self._next = int((self._next + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        idx = self.rng.integers(0, self.size, size=batch_size)
        return {k: torch.from_numpy(getattr(self, k)[idx]).to(device) for k in self.fields}

    def state_dict(self) -> dict:
        """The filled rows (as tensors, for ``torch.save(weights_only=True)``), the write position and the sampling
        generator's state (JSON text: its 128-bit integers)."""
        import json

        rows = {k: torch.from_numpy(getattr(self, k)[: self.size].copy()) for k in self.fields}
        return {**rows, "size": self.size, "next": self._next, "capacity": self.capacity,
                "rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved buffer. With the same capacity the layout is restored exactly (a resumed run samples as
        the uninterrupted one); with another capacity (``total_env_steps`` extended, ``sac.buffer_size`` changed) the
        transitions are kept in chronological order, the newest ``capacity`` of them."""
        import json

        size, nxt, old_capacity = int(state["size"]), int(state["next"]), int(state["capacity"])
        rows = {k: state[k].numpy() for k in self.fields}
        if old_capacity != self.capacity:
            if size == old_capacity and nxt:  # it had wrapped: oldest first
                rows = {k: np.roll(v, -nxt, axis=0) for k, v in rows.items()}
            keep = min(size, self.capacity)
            rows = {k: v[size - keep:] for k, v in rows.items()}
            size, nxt = keep, keep % self.capacity
        self.size, self._next = size, nxt
        for k in self.fields:
            getattr(self, k)[:size] = rows[k]
        self.rng.bit_generator.state = json.loads(state["rng"])


class AuthorityReplayBuffer(ReplayBuffer):
    """Transitions plus who acted (``authority``: 1 the learner, 0 the baseline), for arbitrated training (agency
    transfer): the stored action is the executed one either way."""

    fields = (*FIELDS, "authority")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int = 0):
        super().__init__(capacity, obs_dim, act_dim, seed)
        self.authority = np.zeros(self.capacity, np.float32)

    def add(self, obs, actions, rewards, next_obs, terminated, authority=None) -> None:
        if authority is None:
            raise ValueError("authority: an arbitrated transition needs who acted (1 learner, 0 baseline) per env")
        idx = (self._next + np.arange(len(rewards))) % self.capacity
        self.authority[idx] = authority
        super().add(obs, actions, rewards, next_obs, terminated)
