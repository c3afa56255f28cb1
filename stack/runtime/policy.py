"""The on-robot policy runner: one exported ONNX file, numpy and onnxruntime — never torch.

``OnnxPolicy.load(path, robot_spec)`` refuses a model exported for another robot. ``step(observation)`` keeps the
observation history and the action-chunk queue (execute ``act_steps`` of each chunk, then re-plan; or temporal
ensembling, re-planning every step), validates its input and returns a command clamped to the robot's limits.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import numpy as np
import onnxruntime as ort

from robots.spec import ObsSegment, RobotSpec
from stack.runtime.metadata import PolicyMetadata


class ObservationError(ValueError):
    """An observation was refused (wrong shape, NaN/inf): no command is produced from it."""


class PolicyOutputError(RuntimeError):
    """The model produced a non-finite action: the caller must hold position."""


class ModelError(ValueError):
    """The ONNX file cannot run as the policy its metadata describes (not loadable, wrong inputs or outputs)."""


def _dims_match(shape, expected) -> bool:
    """Whether an ONNX shape (ints, or str/None for symbolic dimensions) fits ``expected`` (None: any)."""
    if shape is None or len(shape) != len(expected):
        return False
    return all(e is None or not isinstance(d, int) or d == e for d, e in zip(shape, expected))


def check_graph(session: ort.InferenceSession, meta: PolicyMetadata) -> None:
    """Refuse a graph whose inputs or outputs do not match its metadata (obs, noise, action), naming both shapes."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    expected_inputs = {"obs": [None, meta.obs_steps, meta.obs_dim]}
    if meta.noise_shape:
        expected_inputs["noise"] = [None, *meta.noise_shape]
    for name, want in expected_inputs.items():
        if name not in inputs:
            raise ModelError(f"graph has no input {name!r} (inputs {sorted(inputs)}); metadata expects {name} "
                             f"{['B', *want[1:]]}")
        if not _dims_match(inputs[name], want):
            raise ModelError(f"graph input {name} has shape {inputs[name]}; metadata says {['B', *want[1:]]} "
                             f"(obs_steps={meta.obs_steps}, obs_dim={meta.obs_dim}, noise_shape="
                             f"{list(meta.noise_shape)})")
    extra = sorted(set(inputs) - set(expected_inputs))
    if extra:
        raise ModelError(f"graph has input(s) {extra} the metadata does not describe (noise_shape="
                         f"{list(meta.noise_shape)})")
    want = [None, meta.horizon, meta.act_dim]
    if "action" not in outputs:
        raise ModelError(f"graph has no output 'action' (outputs {sorted(outputs)})")
    if not _dims_match(outputs["action"], want):
        raise ModelError(f"graph output action has shape {outputs['action']}; metadata says ['B', horizon="
                         f"{meta.horizon}, act_dim={meta.act_dim}] ({len(meta.action_names)} action names)")


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Low-latency settings: one thread (no spin-up cost, no fight with the control loop), all graph optimisations."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else "(no message)"


class OnnxPolicy:
    def __init__(
        self,
        session: ort.InferenceSession,
        meta: PolicyMetadata,
        spec: RobotSpec | None,
        noise: str = "zero",
        seed: int = 0,
        temporal_ensemble: float | None = None,
    ):
        if noise not in ("zero", "random"):
            raise ValueError(f"noise: expected 'zero' or 'random', got {noise!r}")
        self.session = session
        self.meta = meta
        self.spec = spec
        self.noise_mode = noise
        self.temporal_ensemble = temporal_ensemble
        self._rng = np.random.default_rng(seed)
        self._input_names = {i.name for i in session.get_inputs()}
        self._has_noise = "noise" in self._input_names
        low, high = np.array(meta.action_low), np.array(meta.action_high)
        if spec is not None:
            # Clamp to the tighter of the model's action bounds and the robot's own limits.
            idx = [spec.joint_names.index(n) for n in meta.action_names]
            if spec.control_mode == "position":
                lo, hi = spec.pos_limits
            else:
                lo, hi = -spec.effort_limits, spec.effort_limits
            low, high = np.maximum(low, lo[idx]), np.minimum(high, hi[idx])
        self.command_low, self.command_high = low, high
        self.last_inference_s = 0.0
        self.reset()

    # ---- loading --------------------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | Path,
        robot_spec: RobotSpec | None,
        obs_layout: tuple[ObsSegment, ...] | None = None,
        threads: int = 1,
        noise: str = "zero",
        seed: int = 0,
        temporal_ensemble: float | None = None,
        warmup: int = 10,
    ) -> "OnnxPolicy":
        """Load and check a policy: the file loads, its metadata is consistent, the graph's inputs and outputs match
        it and one zero-observation inference gives a ``[1, horizon, act_dim]`` chunk (``ModelError`` /
        ``MetadataError`` say what is wrong). ``robot_spec=None`` skips the robot check (sim evaluation only)."""
        try:
            session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types: not ONNX, empty, truncated, unsupported op…
            raise ModelError(f"{path}: onnxruntime cannot load it: {type(e).__name__}: {_first_line(e)}") from None
        meta = PolicyMetadata.from_props(session.get_modelmeta().custom_metadata_map)
        meta.check_consistent()
        check_graph(session, meta)
        if robot_spec is not None:
            meta.check_robot(robot_spec, obs_layout)
        policy = cls(session, meta, robot_spec, noise=noise, seed=seed, temporal_ensemble=temporal_ensemble)
        obs = np.zeros((1, meta.obs_steps, meta.obs_dim), np.float32)
        try:
            chunk = policy.infer(obs, np.zeros((1, *meta.noise_shape), np.float32) if policy._has_noise else None)
        except Exception as e:
            raise ModelError(f"{path}: inference on a zero observation failed: {type(e).__name__}: "
                             f"{_first_line(e)}") from None
        if chunk.shape != (1, meta.horizon, meta.act_dim):
            raise ModelError(f"{path}: the graph returned an action of shape {list(chunk.shape)} for one "
                             f"observation; metadata says [1, horizon={meta.horizon}, act_dim={meta.act_dim}]")
        for _ in range(warmup):  # first runs allocate and pick kernels: keep that out of the control loop
            policy.infer(obs)
        return policy

    # ---- inference ------------------------------------------------------------------------------------------------
    def noise_for(self, batch: int) -> np.ndarray:
        shape = (batch, *self.meta.noise_shape)
        if self.noise_mode == "zero":
            return np.zeros(shape, np.float32)
        return self._rng.standard_normal(shape).astype(np.float32)

    def infer(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """[B, obs_steps, obs_dim] -> action chunk [B, H, act_dim] (robot units, normalisation inside the graph)."""
        feeds = {"obs": np.ascontiguousarray(obs, dtype=np.float32)}
        if self._has_noise:
            feeds["noise"] = np.ascontiguousarray(noise if noise is not None else self.noise_for(obs.shape[0]),
                                                  dtype=np.float32)
        t0 = time.perf_counter()
        (action,) = self.session.run(["action"], feeds)
        self.last_inference_s = time.perf_counter() - t0
        return action

    # ---- the control-loop interface -------------------------------------------------------------------------------
    def reset(self) -> None:
        self._history: deque[np.ndarray] = deque(maxlen=self.meta.obs_steps)
        self._queue: deque[np.ndarray] = deque()
        self._chunks: deque[tuple[int, np.ndarray]] = deque()
        self._t = 0

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def check_observation(self, observation) -> np.ndarray:
        obs = np.asarray(observation, dtype=np.float64)
        if obs.shape != (self.meta.obs_dim,):
            names = ", ".join(f"{s.name}[{s.size}]" for s in self.meta.obs_layout)
            raise ObservationError(
                f"observation has shape {obs.shape}; policy expects ({self.meta.obs_dim},) = {names}"
            )
        if not np.all(np.isfinite(obs)):
            bad = np.flatnonzero(~np.isfinite(obs)).tolist()
            raise ObservationError(f"observation has NaN/inf at index {bad} ({self._segment_names(bad)}): refused")
        return obs

    def step(self, observation) -> np.ndarray:
        """One control tick: observation [obs_dim] -> command [act_dim], clamped to limits."""
        obs = self.check_observation(observation)
        if not self._history:
            self._history.extend([obs] * self.meta.obs_steps)  # episode start: repeat the first observation
        else:
            self._history.append(obs)
        window = np.stack(self._history)[None]
        if self.temporal_ensemble is not None:
            action = self._ensembled_action(window)
        else:
            if not self._queue:
                chunk = self.infer(window)[0]
                self._queue.extend(chunk[: self.meta.act_steps])
            action = self._queue.popleft()
        self._t += 1
        if not np.all(np.isfinite(action)):
            raise PolicyOutputError(f"policy produced a non-finite action {np.asarray(action).tolist()}: hold")
        return np.clip(action, self.command_low, self.command_high)

    def _ensembled_action(self, window: np.ndarray) -> np.ndarray:
        """Temporal ensembling (ACT): average every stored chunk's prediction for now, weights exp(-m·age_rank),
        the oldest prediction weighted most."""
        self._chunks.append((self._t, self.infer(window)[0]))
        while self._chunks and self._t - self._chunks[0][0] >= self.meta.horizon:
            self._chunks.popleft()
        preds = np.stack([chunk[self._t - t0] for t0, chunk in self._chunks])
        w = np.exp(-self.temporal_ensemble * np.arange(len(preds)))
        return (w[:, None] * preds).sum(0) / w.sum()

    def _segment_names(self, indices: list[int]) -> list[str]:
        names = [f"{s.name}[{i}]" for s in self.meta.obs_layout for i in range(s.size)]
        return [names[i] if i < len(names) else f"index {i}" for i in indices]
