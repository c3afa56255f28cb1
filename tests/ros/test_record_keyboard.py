"""``r2s record --operator keyboard|gamepad`` over real DDS: keys piped into the operator node (a FIFO) take over two
joints; the bag holds human authority with exactly those joints in the per-joint intervention mask, their targets
jogged from where the arm was, and the episode end hands back to the policy. A gamepad's /joy (deadman held, one
axis deflected, malformed messages among them) drives its joints the same way; the malformed ones are counted."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

from tests.ros.conftest import so101_policy  # noqa: E402


def _hold_policy(tmp_path) -> str:
    from sim.tasks.reach import ReachTask

    w = np.zeros((1, 18, 6), np.float32)
    w[0, :6] = np.eye(6)  # hold: command the measured joint positions
    return so101_policy(tmp_path / "hold.onnx", w, ReachTask.obs_layout, content_hash="hold-v1")


def test_keyboard_keys_take_over_some_joints_and_the_bag_has_their_mask(ros_env, tmp_path):
    from stack.data.episodes import AUTHORITY
    from stack.data.logs import read_log
    from stack.ros.record import human_operator_params, record

    policy = _hold_policy(tmp_path)
    fifo = tmp_path / "keys"
    os.mkfifo(fifo)

    def type_keys():  # opens once the node opens its end, like a shell pipe
        with open(fifo, "w") as f:
            f.write("4\n5\nt\n+\n++\n")  # select joints 4 and 5 (indices 3, 4), take over, jog up 3 x 0.05 rad

    typist = threading.Thread(target=type_keys, daemon=True)
    typist.start()
    out = record(policy, "reach", episodes=2, bag_dir=tmp_path / "bag", seed=1, status=False,
                 operator=human_operator_params("keyboard", str(fifo), jog_step_rad=0.05),
                 sim_params={"task_kwargs": '{"max_episode_steps": 40}', "reset_delay_s": 0.1},
                 log_dir=tmp_path / "logs")
    assert set(out["exit_codes"].values()) == {0}, out
    log = read_log(out["bag"])
    first, second = log.episodes
    s = first.steps
    human = s["authority"] == AUTHORITY["human"]
    ok = s["safety_status"] == "ok"
    assert (human & ok).sum() >= 20, (s["authority"], s["safety_status"])
    expected = np.array([False, False, False, True, True, False])
    assert (s["intervention_mask"][human & ok] == expected).all()  # exactly the taken joints
    assert not s["intervention_mask"][~human & ok].any()
    # the taken joints went to where they were at the takeover + 0.15 rad and stayed; the others stayed the policy's
    k = int(np.flatnonzero(human)[0])
    q0 = s["observation"][k, :6]
    np.testing.assert_allclose(s["executed"][human & ok][-1, [3, 4]], q0[[3, 4]] + 0.15, atol=0.03)
    assert np.ptp(s["executed"][human & ok][-5:, [3, 4]], axis=0).max() < 1e-6
    # the episode end handed back: the second episode is the policy's alone
    s2 = second.steps
    assert len(s2["authority"]) >= 20 and (s2["authority"] == AUTHORITY["policy"]).all()
    assert not s2["intervention_mask"][s2["safety_status"] == "ok"].any()
    assert out["log"]["interventions"] == 1
    typist.join(timeout=1.0)


def test_gamepad_deadman_and_axis_take_over_its_joints_and_malformed_joy_is_counted(ros, tmp_path):
    from sensor_msgs.msg import Joy

    from stack.data.episodes import AUTHORITY
    from stack.data.logs import read_log
    from stack.ros import topics
    from stack.ros.bag import read_bag
    from stack.ros.record import human_operator_params, record

    pub = ros.publisher(Joy, "/joy")
    done = threading.Event()
    sent = {"bad": 0}

    def pad():  # 50 Hz: deadman (button 4) held, axis 0 at full deflection; every 10th message malformed
        k = 0
        while not done.is_set():
            k += 1
            if k % 10 == 0:
                pub.publish(Joy(axes=[0.5], buttons=[0] * 8) if k % 20 else Joy(axes=[float("nan"), 0.0],
                                                                                buttons=[0, 0, 0, 0, 1, 0, 0, 0]))
                sent["bad"] += 1
            else:
                pub.publish(Joy(axes=[1.0, 0.0], buttons=[0, 0, 0, 0, 1, 0, 0, 0]))
            done.wait(0.02)

    thread = threading.Thread(target=pad, daemon=True)
    thread.start()
    try:
        out = record(_hold_policy(tmp_path), "reach", episodes=1, bag_dir=tmp_path / "bag", seed=2, status=False,
                     operator=human_operator_params("gamepad", dims=[0, 2],
                                                    gamepad='{"axes": {"0": 0, "2": 1}, "speed": 0.5}'),
                     sim_params={"task_kwargs": '{"max_episode_steps": 40}', "reset_delay_s": 0.1},
                     log_dir=tmp_path / "logs")
    finally:
        done.set()
        thread.join(timeout=2.0)
    assert set(out["exit_codes"].values()) == {0}, out
    (ep,) = read_log(out["bag"]).episodes
    s = ep.steps
    human = (s["authority"] == AUTHORITY["human"]) & (s["safety_status"] == "ok")
    assert human.sum() >= 20
    assert (s["intervention_mask"][human] == [True, False, True, False, False, False]).all()
    ex = s["executed"][human]
    assert np.all(np.diff(ex[:, 0]) >= -1e-9) and ex[-1, 0] - ex[0, 0] > 0.3  # joint 0 driven up at 0.5 rad/s
    assert np.ptp(ex[:, 2]) < 1e-6  # joint 2 taken, its axis at rest: held
    values = [{kv.key: kv.value for kv in st.values} for _, m in read_bag(out["bag"])[topics.DIAGNOSTICS]
              for st in m.status if "r2s_operator" in st.name]
    assert values and int(values[-1]["malformed_joy"]) >= 5 and values[-1]["operator"] == "gamepad"
