"""The keyboard and gamepad operators' takeover logic (``stack.teleop``), without ROS: which joints the human holds
(the intervention mask), their targets inside the safety limits, release, and malformed Joy input."""

from __future__ import annotations

import numpy as np
import pytest

from stack.teleop import Command, GamepadConfig, GamepadTeleop, KeyboardTeleop, Takeover

LO, HI = np.array([-1.0, -1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0, 0.3])
Q = np.array([0.1, -0.2, 0.3, 0.25])


def _kb(jog=0.1):
    return KeyboardTeleop(Takeover(LO, HI, ("a", "b", "c", "d")), jog_step=jog)


def test_takeover_of_a_selection_holds_exactly_those_joints_at_their_measured_positions():
    kb = _kb()
    assert kb.step(Q).authority == "policy"
    for k in "24t":
        assert kb.key(k) is None
    cmd = kb.step(Q + 0.05)  # the takeover started at the positions measured before it
    assert cmd.authority == "human" and cmd.dims.tolist() == [1, 3]
    np.testing.assert_allclose(cmd.targets, Q[[1, 3]])
    np.testing.assert_array_equal(kb.t.mask(), [0.0, 1.0, 0.0, 1.0])
    kb.key("2")  # deselect b: jogs move d only
    kb.key("+")
    np.testing.assert_allclose(kb.step(Q).targets, [Q[1], 0.3])  # d: 0.25 + 0.1 clamped to its limit 0.3
    kb.key("t")  # the selection (d) is all held: t releases it, b stays held
    cmd = kb.step(Q)
    assert cmd.dims.tolist() == [1] and cmd.authority == "human"
    kb.key("0")
    kb.key("t")  # nothing selected: all joints; b keeps its target, the others start where they are
    np.testing.assert_allclose(kb.step(Q).targets, Q)
    kb.key(" ")  # space releases everything: authority back to the policy
    cmd = kb.step(Q)
    assert cmd.authority == "policy" and cmd.dims.size == 0 and not kb.t.mask().any()


def test_jog_is_bounded_by_the_limits_and_keys_before_any_measurement_wait_for_one():
    kb = _kb(jog=0.4)
    for k in "1t-----":
        kb.key(k)
    assert kb.t.command().authority == "policy" and kb.pending == ["t", *"-----"]
    cmd = kb.step([np.nan, 0, 0, 0])  # not a measurement: still waiting
    assert cmd.authority == "policy"
    cmd = kb.step(Q)
    assert cmd.dims.tolist() == [0] and cmd.targets.tolist() == [-1.0]  # 0.1 - 5 x 0.4, clamped at -1
    for _ in range(10):
        kb.key("+")
    assert kb.step(Q).targets.tolist() == [1.0]
    assert kb.key("y") == "success" and kb.key("S") == "start"
    with pytest.raises(KeyError, match="unknown key"):
        kb.key("x")
    with pytest.raises(KeyError, match="joints 1-4"):
        kb.key("7")
    kb.key("q")
    assert kb.quit and kb.step(Q).authority == "policy"


def test_a_measurement_outside_the_limits_starts_the_target_at_the_limit():
    t = Takeover(LO, HI)
    t.take(np.array([0.0, 0.0, 0.0, 0.9]), [3])
    assert t.command().targets.tolist() == [0.3]
    with pytest.raises(ValueError, match="joint indices"):
        t.take(Q, [4])
    with pytest.raises(ValueError, match="lo <= hi"):
        Takeover([0.0], [-1.0])


def _pad(**kw):
    cfg = GamepadConfig(axes={0: 0, 2: 3}, speed=1.0, deadzone=0.1, deadman=4, marks={7: "start", 0: "success"},
                        **kw)
    return GamepadTeleop(Takeover(LO, HI), cfg)


def _joy(axes=(0.0,) * 4, pressed=()):
    return list(axes), [int(i in pressed) for i in range(8)]


def test_deadman_takes_over_axes_drive_targets_and_releasing_it_returns_authority():
    pad = _pad()
    assert pad.joy(*_joy(), 0.0) == [] and pad.step(Q, 0.0).authority == "policy"
    pad.joy(*_joy((0.5, 0.9, 0.0, -0.05), pressed=(4,)), 0.05)
    cmd = pad.step(Q, 0.1)
    assert cmd.authority == "human" and cmd.dims.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(cmd.targets, Q)  # the first step holds where the arm is
    cmd = pad.step(Q, 0.2)  # 0.1 s at 0.5 rad/s on joint 0; axis 3 (joint 2) is inside the dead zone
    np.testing.assert_allclose(cmd.targets, [0.15, -0.2, 0.3, 0.25])
    pad.joy(*_joy((1.0, 0, 0, 1.0), pressed=(4,)), 0.25)
    for k in range(30):
        cmd = pad.step(Q, 0.3 + 0.1 * k)  # stale after 0.5 s: released
        if k < 5:
            assert cmd.authority == "human"
    assert cmd.authority == "policy" and not pad.t.held.any()
    pad.joy(*_joy((1.0, 0, 0, 1.0), pressed=(4,)), 10.0)
    pad.step(Q, 10.0)
    for k in range(40):
        cmd = pad.step(Q, 10.0 + 0.01 * k)
        pad.joy(*_joy((1.0, 0, 0, 1.0), pressed=(4,)), 10.0 + 0.01 * k)
    np.testing.assert_allclose(cmd.targets, [0.49, -0.2, 0.69, 0.25])  # 0.39 s at 1 rad/s
    pad.joy(*_joy(), 10.5)  # deadman released
    assert pad.step(Q, 10.5).authority == "policy"


def test_deadman_takes_over_only_its_dims_and_jog_stays_within_limits():
    pad = _pad(dims=(2,))
    pad.joy(*_joy((0, 0, 0, 1.0), pressed=(4,)), 0.0)
    pad.step(Q, 0.0)
    for k in range(1, 100):
        pad.joy(*_joy((1.0, 0, 0, 1.0), pressed=(4,)), 0.05 * k)
        cmd = pad.step(Q, 0.05 * k)
    assert cmd.dims.tolist() == [2] and cmd.targets.tolist() == [1.0]
    np.testing.assert_array_equal(pad.t.mask(), [0, 0, 1, 0])


def test_after_a_release_the_deadman_must_be_let_go_before_it_takes_over_again():
    pad = _pad()
    pad.joy(*_joy(pressed=(4,)), 0.0)
    assert pad.step(Q, 0.0).authority == "human"
    pad.release()  # e.g. the episode ended
    pad.joy(*_joy(pressed=(4,)), 0.05)
    assert pad.step(Q, 0.05).authority == "policy"
    pad.joy(*_joy(), 0.1)
    pad.joy(*_joy(pressed=(4,)), 0.15)
    assert pad.step(Q, 0.15).authority == "human"
    kb = _kb()
    kb.key("t")
    kb.release()
    assert kb.step(Q).authority == "policy"


def test_buttons_mark_episodes_on_their_press():
    pad = _pad()
    assert pad.joy(*_joy(pressed=(7,)), 0.0) == ["start"]
    assert pad.joy(*_joy(pressed=(7,)), 0.1) == []  # held: no repeat
    assert pad.joy(*_joy(pressed=(0, 4)), 0.2) == ["success"]
    assert pad.joy(*_joy(), 0.3) == [] and pad.joy(*_joy(pressed=(7,)), 0.4) == ["start"]


@pytest.mark.parametrize("axes,buttons,why", [
    ([0.0, 0.0], [0] * 8, "axes"),  # too few axes for axis 3
    ([0.0] * 4, [0] * 3, "buttons"),  # too few buttons for the deadman
    ([float("nan"), 0.0, 0.0, 0.0], [0] * 8, "non-finite"),
    ([0.0] * 4, None, "buttons"),
    ([0.0, "x", 0.0, 0.0], [0] * 8, "numeric"),
])
def test_malformed_joy_is_ignored_and_counted(axes, buttons, why):
    pad = _pad()
    pad.joy(*_joy((0.5, 0, 0, 0), pressed=(4,)), 0.0)
    pad.step(Q, 0.0)
    before = pad.step(Q, 0.05).targets.copy()
    assert pad.joy(axes, buttons, 0.06) == []
    assert pad.malformed == 1 and why in pad.last_error
    cmd = pad.step(Q, 0.1)  # the last good message still drives: 0.05 s at 0.5 rad/s
    assert cmd.authority == "human"
    np.testing.assert_allclose(cmd.targets[0], before[0] + 0.025)


def test_gamepad_config_from_json_names_bad_fields():
    cfg = GamepadConfig.from_json('{"axes": {"0": 1}, "deadman": 5, "marks": {"2": "end"}, "dims": [0]}')
    assert cfg.axes == {0: 1} and cfg.marks == {2: "end"} and cfg.dims == (0,) and cfg.deadman == 5
    with pytest.raises(ValueError, match="unknown field"):
        GamepadConfig.from_json('{"speeed": 1}')
    for text, field in (('{"axes": [1, 2]}', "axes"), ('{"marks": {"a": "end"}}', "marks"), ('{"dims": 3}', "dims")):
        with pytest.raises(ValueError, match=f"gamepad config: {field} is .*; expected"):
            GamepadConfig.from_json(text)
    with pytest.raises(ValueError, match="out of range"):
        GamepadTeleop(Takeover(LO, HI), GamepadConfig(axes={9: 0}))
    with pytest.raises(ValueError, match=r"indices \[-1\]"):
        GamepadTeleop(Takeover(LO, HI), GamepadConfig(axes={0: -1}))
    with pytest.raises(ValueError, match=r"marks \['pause'\]"):
        GamepadTeleop(Takeover(LO, HI), GamepadConfig(axes={0: 0}, marks={3: "pause"}))
    assert isinstance(_pad().step(Q, 0.0), Command)


def test_record_refuses_a_keyboard_operator_without_a_terminal_or_pipe(monkeypatch, capsys, tmp_path):
    import os

    from stack.ros.record import cmd_record, keyboard_input_problem

    with open(os.devnull) as null:
        assert "neither a terminal nor a pipe" in keyboard_input_problem(null)
        monkeypatch.setattr("sys.stdin", null)
        assert cmd_record(["--sim", "--policy", "p.onnx", "--operator", "keyboard"]) == 2
        assert "needs an interactive terminal or keys piped into stdin" in capsys.readouterr().err
    r, w = os.pipe()
    with os.fdopen(r) as pipe, os.fdopen(w, "w"):
        assert keyboard_input_problem(pipe) is None
    keys = tmp_path / "keys"
    keys.write_text("t\n")
    with open(keys) as f:
        assert keyboard_input_problem(f) is None
    assert cmd_record(["--sim", "--policy", "p.onnx", "--operator", "keyboard", "--keys", str(tmp_path / "no")]) == 2
    assert "no such file or FIFO" in capsys.readouterr().err


def test_only_ascii_digits_select_joints_and_the_reader_filter_agrees_with_key():
    kb = _kb()
    for k in ("²", "٣", "x"):  # str.isdigit() is True for the first two; int("²") raises ValueError
        assert not KeyboardTeleop.is_key(k)
        with pytest.raises(KeyError, match="unknown key"):
            kb.key(k)
    assert not kb.selected
    for k in "0123456789tTr +-=_sSeyYnq":
        assert KeyboardTeleop.is_key(k), k
    kb.key("3")
    assert kb.selected == {2}
