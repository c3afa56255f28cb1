"""``r2s sysid BAG --robot NAME [--out overlay.yaml]``: calibrate the simulator from a recorded bag (real-to-sim).

Reads the bag (``stack.data.logs.read_log``): per episode, the observed joint positions (the observation's entries
named like the robot's joints, at their stamps) and the executed command of each step (sent at the step's stamp).
``sim.sysid.fit`` replays the commands from each episode's first observation and fits the joint parameters and the
command delay; the identified values go to a robot-spec overlay (``robots.overlay``; ``R2S_ROBOT_OVERLAY=<file>``
makes sim, training and ``r2s deploy --sim`` use it, ``r2s deploy --sim --robot-overlay FILE`` the sim robot alone;
the arm tasks and the sim robot apply its command delay too) and a plot of real vs sim trajectories beside it.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def segments_from_log(log, joint_names: tuple[str, ...]) -> list:
    """One ``sim.sysid.Segment`` per episode with at least 3 steps that all carry a command."""
    from sim.sysid import Segment

    names = list(log.obs_names)
    # The policy node names observation entries by segment (``joint_pos[i]``: the spec's i-th joint); a bag of
    # another recorder may name the joints themselves.
    wanted = joint_names if set(joint_names) <= set(names) else [f"joint_pos[{i}]" for i in range(len(joint_names))]
    missing = [j for j in wanted if j not in names]
    if missing:
        raise ValueError(f"bag observations have no joint position(s) {missing} (observation names: {names})")
    cols = [names.index(j) for j in wanted]
    act_cols = [log.action_names.index(j) for j in joint_names] if set(joint_names) <= set(log.action_names) \
        else list(range(len(joint_names)))
    out = []
    for ep in log.episodes:
        s = ep.steps
        q, cmd = s["observation"][:, cols], s["executed"][:, act_cols]
        ok = np.all(np.isfinite(q), axis=1) & np.all(np.isfinite(cmd), axis=1)
        first = int(np.argmax(ok)) if ok.any() else len(ok)
        last = first + (int(np.argmin(ok[first:])) if not ok[first:].all() else len(ok) - first)
        if last - first < 3:
            continue
        t = (s["stamp_ns"][first:last] - s["stamp_ns"][first]) / 1e9
        # Step k's command is sent at its observation; the observation of step k+1 is its measured response.
        out.append(Segment(cmd[first:last - 1], t[1:], q[first + 1:last], q[first]))
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="r2s sysid", description=__doc__.splitlines()[0])
    p.add_argument("bag", help="a recorded bag (rosbag2 MCAP directory or .mcap file)")
    p.add_argument("--robot", required=True, help="robot name (r2s tasks lists them)")
    p.add_argument("--out", default="overlay.yaml", help="the overlay file to write (.yaml or .json)")
    p.add_argument("--plot", default=None, help="the real-vs-sim plot (default: beside --out, .png)")
    p.add_argument("--max-iters", type=int, default=10, help="least-squares iterations of the first fit")
    args = p.parse_args(argv)
    import robots
    from sim import sysid
    from stack.data.logs import read_log

    try:
        sysid.require_sysid()
        segments = segments_from_log(read_log(args.bag), robots.get_robot(args.robot).joint_names)
    except (sysid.SysidUnavailable, ValueError, KeyError, FileNotFoundError) as e:
        print(f"r2s sysid: {e}", file=sys.stderr)
        return 2
    if not segments:
        print(f"r2s sysid: {args.bag} has no episode with 3 or more commanded steps", file=sys.stderr)
        return 2
    result = sysid.fit(args.robot, segments, max_iters=args.max_iters)
    overlay = result.overlay(source={"bag": str(args.bag), "episodes": len(segments)})
    if args.out.endswith(".json"):
        text = json.dumps(overlay, indent=2)
    else:
        import yaml

        text = yaml.safe_dump(overlay, sort_keys=False)
    with open(args.out, "w") as f:
        f.write(text)
    plot = args.plot or args.out.rsplit(".", 1)[0] + ".png"
    sysid.plot(result, segments, plot)
    print(json.dumps({"overlay": args.out, "plot": plot, "unidentified": result.unidentified,
                      "command_delay_substeps": result.delay_substeps, **overlay["tracking_rms_rad"]}))
    return 0
