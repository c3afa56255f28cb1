"""The zone task: its baseline always reaches the goal without entering the box; entering ends the episode."""

import numpy as np
import pytest

from robots.baselines import ReachBaseline
from robots.baselines.zone import segment_crosses_rect
from robots.spec import ObsSegment
from sim.registry import make_task
from sim.tasks.zone import segment_hits_box


def _run(task, controller, seed):
    obs, _ = task.reset(seed=seed)
    ret = 0.0
    for k in range(task.max_episode_steps):
        obs, r, term, trunc, info = task.step(controller(obs))
        ret += r
        if term or trunc:
            return info, k + 1, ret, term
    raise AssertionError("episode did not end at its time limit")


@pytest.mark.parametrize("mode", ["absolute", "delta"])
def test_baseline_reaches_every_goal_without_entering(mode):
    task = make_task("zone", action_mode=mode)
    assert task.observation_space.shape == (21,)
    for seed in range(4):
        info, steps, _, term = _run(task, task.baseline, 10_000 + seed)
        assert info["success"] and not info["entered_zone"] and term
        assert 15 < steps < task.max_episode_steps


def test_the_straight_line_enters_and_ends_the_episode_as_a_failure():
    task = make_task("zone", zone_mode="terminate")
    direct = ReachBaseline((ObsSegment("joint_pos", 6, ""), ObsSegment("v", 6, ""), ObsSegment("e", 3, ""),
                            ObsSegment("goal", 3, "")))
    info, steps, ret, term = _run(task, lambda o: direct(o[:18]), 3)
    assert term and info["entered_zone"] and not info["success"]
    assert steps < task.max_episode_steps
    # the entering step costs 0.5 per step left, itself included
    assert ret < -task.zone_penalty * (task.max_episode_steps - steps + 1) + 1e-9


def test_in_cost_mode_each_touching_step_costs_and_the_episode_goes_on():
    task = make_task("zone")
    obs, _ = task.reset(seed=3)
    direct = ReachBaseline((ObsSegment("joint_pos", 6, ""), ObsSegment("v", 6, ""), ObsSegment("e", 3, ""),
                            ObsSegment("goal", 3, "")))
    for _ in range(60):
        obs, r, term, trunc, info = task.step(direct(np.concatenate((obs[:15], task.zone))))  # IK at the box
        if info["entered_zone"]:
            break
    assert info["entered_zone"] and not term and info["zone_entries"] == 1
    assert r == pytest.approx(-info["distance"] - task.zone_penalty, abs=0.02)  # −distance − 0.5 (− action rate)


def test_box_and_rect_segment_tests():
    c, h = np.zeros(3), np.array([0.1, 0.02, 0.1])
    assert segment_hits_box(np.array([0.0, -0.5, 0.0]), np.array([0.0, 0.5, 0.0]), c, h)  # tunnels through
    assert not segment_hits_box(np.array([0.0, -0.5, 0.2]), np.array([0.0, 0.5, 0.2]), c, h)  # above
    assert segment_hits_box(np.zeros(3), np.zeros(3), c, h)  # a point inside
    assert not segment_hits_box(np.array([0.0, 0.03, 0.0]), np.array([0.0, 0.05, 0.0]), c, h)
    assert segment_crosses_rect(np.array([0.0, -1.0]), np.array([0.0, 1.0]), np.array([-0.1, -0.1]),
                                np.array([0.1, 0.1]))
    assert not segment_crosses_rect(np.array([0.2, -1.0]), np.array([0.2, 1.0]), np.array([-0.1, -0.1]),
                                    np.array([0.1, 0.1]))
