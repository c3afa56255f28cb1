"""With ``--device cuda`` a rollout moves the whole batch at most once each way per decision (issue: GPU training).

No GPU here: the collector's ``DeviceLink`` is the only road between numpy and torch, and a torch-function spy
proves it — every ``from_numpy``/``.to``/``.cpu``/``.numpy`` of a rollout (PPO, FPO, DPPO; an episode end inside
the rollout, whose final observation must travel too) is one the link counted, and no ``.item()``/``.tolist()``
(an implicit device→host sync each) happens at all. On a GPU the same code then does those transfers and no more."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from stack.config import EnvConfig, TrainConfig
from stack.normalize import ObsNormalizer, RewardScaler
from stack.rollout import ActionScaler, RolloutCollector, RolloutStorage
from stack.runners.on_policy import make_algo

WATCHED = ("to", "cpu", "numpy", "item", "tolist")


def _names_a_device(args, kwargs) -> bool:
    """``.to(device)`` / ``.to("cuda")`` / ``.to(device=…)``; ``.to(dtype)`` and ``.to(other_tensor)`` stay put."""
    return "device" in (kwargs or {}) or any(isinstance(a, (torch.device, str)) for a in args[1:])


class TransferSpy(TorchFunctionMode):
    """Counts the tensor methods that cross (or on a GPU would cross) between host and device."""

    def __init__(self):
        super().__init__()
        self.counts = dict.fromkeys(WATCHED, 0)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.counts and (name != "to" or _names_a_device(args, kwargs)):
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("algo,policy", [("ppo", "gaussian"), ("fpo", "flow"), ("dppo", "diffusion")])
def test_a_rollout_moves_the_batch_once_each_way_per_decision(algo, policy, monkeypatch):
    from sim.pool import make_pool

    n, decisions = 4, 12
    cfg = TrainConfig(algo=algo, policy=policy, env=EnvConfig(task="point_mass", num_envs=n))
    envs = make_pool("point_mass", n, backend="sync", seed=3, task_kwargs={"max_episode_steps": 5})
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent = make_algo(cfg, obs_dim, act_dim, torch.device("cpu"))
    collector = RolloutCollector(envs, ObsNormalizer(obs_dim), RewardScaler(n, 0.99),
                                 ActionScaler.for_space(envs.single_action_space))
    storage = RolloutStorage(decisions, n, obs_dim, act_dim, horizon=agent.act_steps,
                             extras_spec=agent.extras_spec())
    collector.reset(seed=3)
    from_numpy = torch.from_numpy
    made = {"from_numpy": 0}

    def counted_from_numpy(a):
        made["from_numpy"] += 1
        return from_numpy(a)

    monkeypatch.setattr(torch, "from_numpy", counted_from_numpy)
    link = collector.link
    h2d0, d2h0 = link.host_to_device, link.device_to_host
    with TransferSpy() as spy:
        stats = collector.collect(agent, storage)
    envs.close()
    h2d, d2h = link.host_to_device - h2d0, link.device_to_host - d2h0
    assert storage.episode_end.any(), "the rollout must end episodes (their final obs travel too)"
    assert d2h == decisions  # the executed actions, once a decision
    assert h2d == decisions  # the next (and final) observations with the rewards and flags, once a decision
    assert stats.steps >= decisions * n  # ≤ one transfer each way per env step of the whole batch
    # every crossing was the link's: it does from_numpy + .to per upload, .cpu + .numpy per download
    assert made["from_numpy"] == h2d and spy.counts["to"] == h2d
    assert spy.counts["cpu"] == d2h and spy.counts["numpy"] == d2h
    assert spy.counts["item"] == 0 and spy.counts["tolist"] == 0
