"""The keyboard operator's episode keys: ``s`` start, ``e`` end (no outcome), ``y`` success, ``n`` failure, ``q`` quit.

Each key publishes the mark on ``/r2s/episode_event`` (``stack.ros.topics.EPISODE_EVENT``), which the episode node
(``stack.ros.episode_node``) turns into episode boundaries and outcomes; the recorder stores both. In a terminal
the keys act at once (raw mode, no Enter); from a pipe or file each line is a key or a whole mark
(``failure: dropped the cube`` carries a note). Anything else is answered on stderr and nothing is published.
Taking over the arm from the keyboard (digits select joints, ``t`` takes over, ``+``/``-`` jog, ``r`` releases:
``stack.teleop``) is the operator node's ``operator: keyboard`` (``r2s record --operator keyboard``), which reads
the same keys with ``inputs``.

Run in the operator's terminal, beside ``r2s deploy``: ``python -m stack.ros.keyboard_operator``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from stack.ros.episode_tracker import operator_event
from stack.ros.messages import BadMessage

KEYS = {"s": "start", "e": "end", "y": "success", "n": "failure"}
"""Key → episode mark."""
QUIT = "q"
HELP = ("keys: s start an episode | y success (ends it) | n failure (ends it) | e end without an outcome | "
        "q quit")


def marks(stream: TextIO, keys_at_once: bool = False, err: TextIO | None = None) -> Iterator[str]:
    """The marks typed on ``stream`` until ``q`` or its end: one key at a time (``keys_at_once``: a raw terminal),
    else one key or mark per line. Unknown input is answered on ``err`` and skipped."""
    err = err if err is not None else sys.stderr
    while True:
        text = stream.read(1) if keys_at_once else stream.readline()
        if not text:
            return
        text = text.strip()
        if not text:
            continue
        if text.lower() == QUIT:
            return
        if text.lower() in KEYS:
            yield KEYS[text.lower()]
            continue
        try:
            event, note = operator_event(text, "keyboard")
        except BadMessage:
            print(f"unknown key {text[:20]!r}; {HELP}", file=err, flush=True)
            continue
        yield f"{event}: {note}" if note else event


def inputs(stream: TextIO, is_key: Callable[[str], bool], keys_at_once: bool = False,
           err: TextIO | None = None) -> Iterator[tuple[str, str]]:
    """``("key", k)`` and ``("mark", text)`` items typed on ``stream`` until ``q`` (yielded as a key) or its end: one
    key at a time (``keys_at_once``), else per line a key, a mark (``failure: note``) or a run of keys (``34t++``).
    ``is_key``: whether a character is a key the reader knows. Unknown input is answered on ``err`` and skipped."""
    err = err if err is not None else sys.stderr
    while True:
        text = stream.read(1) if keys_at_once else stream.readline()
        if not text:
            return
        if not keys_at_once:  # a line: its blanks are not keys, unless the line is only blanks (space: release)
            raw = text.strip("\r\n")
            text = raw.strip() or (" " if raw else "")
        if not text:
            continue
        if len(text) > 1:
            try:
                event, note = operator_event(text, "keyboard")
            except BadMessage:
                pass
            else:
                yield "mark", f"{event}: {note}" if note else event
                continue
        if all(is_key(k) for k in text):
            for k in text:
                yield "key", k
                if k.lower() == QUIT:
                    return
            continue
        print(f"unknown key {text[:20]!r}", file=err, flush=True)


def publish_marks(stream: TextIO, publish: Callable[[str], None], keys_at_once: bool = False,
                  err: TextIO | None = None) -> int:
    """Publish each mark typed on ``stream``; how many were published."""
    n = 0
    for mark in marks(stream, keys_at_once, err):
        publish(mark)
        n += 1
        print(f"[r2s] episode mark: {mark}", file=err if err is not None else sys.stderr, flush=True)
    return n


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from std_msgs.msg import String

    from stack.ros import topics
    from stack.ros.common import QOS_RELIABLE

    rclpy.init(args=argv)
    node = rclpy.create_node("r2s_keyboard_operator")
    pub = node.create_publisher(String, topics.EPISODE_EVENT, QOS_RELIABLE)
    print(HELP, file=sys.stderr, flush=True)
    tty = sys.stdin.isatty()
    old = None
    try:
        if tty:
            import termios
            import tty as tty_mod

            old = termios.tcgetattr(sys.stdin.fileno())
            tty_mod.setcbreak(sys.stdin.fileno())  # keys at once; Ctrl-C still interrupts
        publish_marks(sys.stdin, lambda text: pub.publish(String(data=text)), keys_at_once=tty)
    except KeyboardInterrupt:
        pass
    finally:
        if old is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, old)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
