"""Episode bookkeeping by hand (no ROS): seeds, outcomes, success step, automatic resets, the episode limit, and
validation of received episode events."""

from types import SimpleNamespace as NS

import pytest

from stack.ros.episode_tracker import EpisodeTracker, episode_event
from stack.ros.messages import BadMessage


def test_outcomes_success_step_and_seeds():
    eps = EpisodeTracker(max_steps=3, seed=10, auto_reset=True, reset_delay_s=0.5)
    assert eps.warmup_seed() == 10  # the scene before the first episode is episode 0's
    assert eps.start() == {"episode": "0", "seed": "10"}
    assert eps.step(1.0, False, False, now_s=0.1) is None
    assert eps.step(2.0, True, False, now_s=0.2) is None
    end = eps.step(0.5, True, False, now_s=0.3)  # the time limit, last step successful
    assert end == {"episode": "0", "outcome": "success", "length": "3", "return": "3.5", "success_step": "2"}
    assert not eps.in_episode and not eps.due(0.7) and eps.due(0.8)
    assert eps.start()["seed"] == "11"
    assert eps.step(0.0, False, True, now_s=1.0)["outcome"] == "failure"  # terminal, not successful
    eps.start()
    eps.step(0.0, True, False, 2.0)
    eps.step(0.0, False, False, 2.1)
    assert eps.step(0.0, False, False, 2.2)["outcome"] == "timeout"  # succeeded once, not at the end


def test_episode_limit_and_an_explicit_end():
    eps = EpisodeTracker(max_steps=1, episodes=2, auto_reset=True)
    eps.start()
    eps.step(0.0, False, False, 0.0)
    assert eps.reset_at == 0.0
    eps.start()
    eps.step(0.0, False, False, 1.0)
    assert eps.reset_at is None and not eps.more()  # two episodes: no third
    eps = EpisodeTracker(max_steps=10)
    eps.start()
    eps.step(1.0, False, False, 0.0)
    assert eps.end("timeout", reason="reset") == {"episode": "0", "outcome": "timeout", "length": "1",
                                                  "return": "1.0", "success_step": "", "reason": "reset"}


def _event(message, **values):
    return NS(status=[NS(message=message, values=[NS(key=k, value=v) for k, v in values.items()])])


def test_episode_events_are_validated():
    assert episode_event(_event("start", episode="3", seed="7")) == ("start", {"episode": "3", "seed": "7"})
    for msg, match in ((NS(status=[]), "no status"), (_event("restart", episode="1"), "'restart'"),
                       (_event("start", seed="1"), "no 'episode'")):
        with pytest.raises(BadMessage, match=match):
            episode_event(msg)
