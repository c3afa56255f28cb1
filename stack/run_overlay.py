"""Which robot overlay (``robots.overlay``, from ``r2s sysid``) a run's simulator carried: recorded in the run, checked
on resume, named in the exported policy, compared by ``r2s deploy --sim``.

A run whose task takes an overlay (the arm tasks' ``robot_overlay`` argument; when the task kwargs leave it unset, the
file ``R2S_ROBOT_OVERLAY`` names) keeps::

    runs/<name>/robot_overlay.yaml    a byte copy of the overlay file as the run started (.json when it was JSON)
    checkpoints/*/meta.json           "robot_overlay": {"file", "path", "hash", "copy"}; null: the nominal model

``hash`` is ``robots.overlay.overlay_hash`` (what the overlay changes in the simulation). To reproduce or resume the
run: ``R2S_ROBOT_OVERLAY=runs/<name>/robot_overlay.yaml``.

**A resume whose simulator would carry another overlay is refused** (another hash, none where one was recorded, or one
where none was), naming the field. Not a warning: the run would go on learning in a second simulator while its
checkpoints and exported policy name the first, and the deploy-time comparison below could then no longer catch a
mismatch. Forgetting the variable in a new shell is the usual cause; the message says what to set.

The exported ONNX metadata carries ``robot_overlay`` (the file name; "" for the nominal model) and
``robot_overlay_hash`` ("" likewise). ``r2s deploy --sim`` warns when the sim robot's overlay differs from it, and
``r2s eval RUN`` when the simulator it evaluates in carries another overlay than the run's.
"""

from __future__ import annotations

import inspect
import shutil
import warnings
from pathlib import Path

from robots.overlay import OVERLAY_ENV, load_overlay, overlay_hash, overlay_path

META_KEY = "robot_overlay"
"""The checkpoint meta field holding the run's overlay record (None: the nominal model)."""
PROP_FILE, PROP_HASH = "robot_overlay", "robot_overlay_hash"
"""The exported policy's metadata keys: the overlay's file name and its ``overlay_hash`` ("" both: none)."""
COPY_STEM = "robot_overlay"


def takes_overlay(task: str) -> bool:
    """Whether the registered ``task`` builds its model with a robot overlay (an unknown or empty name: False)."""
    if not task:
        return False
    from sim.registry import task_class

    try:
        cls = task_class(task)
    except KeyError:
        return False
    return "robot_overlay" in inspect.signature(cls).parameters


def task_overlay(task: str, task_kwargs: dict | None) -> str:
    """The overlay file ``task`` built with ``task_kwargs`` carries, as the task itself decides: its ``robot_overlay``
    argument ("" none), else the file ``R2S_ROBOT_OVERLAY`` names; "" for a task that takes no overlay."""
    if not takes_overlay(task):
        return ""
    value = (task_kwargs or {}).get("robot_overlay")
    return overlay_path() if value is None else str(value)


def overlay_record(path: str, robot: str | None = None) -> dict | None:
    """``{"file", "path", "hash"}`` of the overlay file ``path`` (checked by ``load_overlay``; None for "")."""
    if not path:
        return None
    try:
        overlay = load_overlay(path, robot)
    except OSError as e:
        raise ValueError(f"robot overlay {path}: cannot read it ({e.strerror or e})") from None
    resolved = Path(path).resolve()
    return {"file": resolved.name, "path": str(resolved), "hash": overlay_hash(overlay)}


def task_robot(task: str) -> str | None:
    from sim.registry import task_class

    robot = getattr(task_class(task), "robot", None)
    return getattr(robot, "name", None)


def run_overlay(task: str, task_kwargs: dict | None) -> dict | None:
    """The overlay record of a run training or evaluating on ``task`` (None: the nominal model). Warns when
    ``R2S_ROBOT_OVERLAY`` is set for a task that takes no overlay (it is ignored there)."""
    path = task_overlay(task, task_kwargs)
    if not path:
        if overlay_path() and task and not takes_overlay(task):
            warnings.warn(f"{OVERLAY_ENV}={overlay_path()} is set, but task {task!r} takes no robot overlay: this run "
                          "simulates the nominal model", stacklevel=3)
        return None
    return overlay_record(path, task_robot(task))


def save_copy(run_dir: str | Path, record: dict) -> dict:
    """Copy the overlay file into ``run_dir`` (``robot_overlay.yaml``, or ``.json``) and return the record with
    ``copy`` (the copy's name in the run directory). An existing copy of the same hash is kept."""
    src = Path(record["path"])
    name = COPY_STEM + (".json" if src.suffix == ".json" else ".yaml")
    dst = Path(run_dir) / name
    keep = dst.is_file() and overlay_record(str(dst))["hash"] == record["hash"]
    if not keep and dst.resolve() != src:
        shutil.copyfile(src, dst)
    return {**record, "copy": name}


def describe(record: dict | None) -> str:
    if not record:
        return "none (the nominal model)"
    return f"{record['file']} (hash {record['hash']})"


def check_resume(meta: dict, current: dict | None, run_dir: str | Path, where: str) -> dict | None:
    """The overlay record a resumed run carries on: the recorded one, when the simulator's overlay now has the same
    hash; otherwise ``CheckpointError`` naming the field and what to set. A checkpoint from before overlays were
    recorded (no field) resumes with a warning when an overlay is in force."""
    from stack.checkpoint import CheckpointError

    if META_KEY not in meta:
        if current is not None:
            warnings.warn(f"{where}: field {META_KEY!r} is not recorded (a checkpoint from before r2s recorded robot "
                          f"overlays); resuming with {describe(current)}", stacklevel=3)
        return current
    recorded = meta[META_KEY]
    if (recorded or {}).get("hash") == (current or {}).get("hash"):
        return recorded
    if recorded:
        copy = Path(run_dir) / recorded.get("copy", COPY_STEM + ".yaml")
        fix = f"resume with {OVERLAY_ENV}={copy} (the run's copy)"
    else:
        fix = f"resume with {OVERLAY_ENV} unset (or task_kwargs robot_overlay: '')"
    raise CheckpointError(f"{where}: field {META_KEY!r} is {describe(recorded)}, but the simulator now carries "
                          f"{describe(current)} (task_kwargs robot_overlay, else {OVERLAY_ENV}); a resumed run must "
                          f"train on the simulator it started on: {fix}, or start a new run")


def eval_mismatch(meta: dict, current: dict | None, run_dir: str | Path) -> str | None:
    """What ``r2s eval`` warns about (None: nothing): it evaluates a run in a simulator carrying another overlay than
    the one the run trained with (an evaluation elsewhere is allowed: it just does not reproduce the run's)."""
    if META_KEY not in meta:
        return None
    recorded = meta[META_KEY]
    if (recorded or {}).get("hash") == (current or {}).get("hash"):
        return None
    if recorded:
        fix = f"{OVERLAY_ENV}={Path(run_dir) / recorded.get('copy', COPY_STEM + '.yaml')}"
    else:
        fix = f"{OVERLAY_ENV} unset"
    return (f"{run_dir}: the run trained with robot overlay {describe(recorded)}, this evaluation's simulator carries "
            f"{describe(current)}; its returns are not the run's (to reproduce them: {fix})")


def export_props(meta: dict) -> dict[str, str]:
    """The exported policy's overlay metadata from a checkpoint's meta ({} for a checkpoint that records none)."""
    if META_KEY not in meta:
        return {}
    record = meta[META_KEY]
    return {PROP_FILE: record["file"] if record else "", PROP_HASH: record["hash"] if record else ""}


def deploy_mismatch(props: dict[str, str], sim_record: dict | None) -> str | None:
    """What ``r2s deploy --sim`` warns about (None: nothing): the sim robot's overlay is not the one the policy was
    trained with (``props``: the policy's metadata), or the policy names none and the sim robot runs one."""
    if PROP_HASH not in props:
        if sim_record is None:
            return None
        return (f"robot overlay: the policy's metadata does not say which overlay it was trained with (exported "
                f"before r2s recorded it); the sim robot runs with {describe(sim_record)}")
    trained = props[PROP_HASH]
    if trained == (sim_record or {}).get("hash", ""):
        return None
    trained_desc = describe({"file": props.get(PROP_FILE, "?"), "hash": trained} if trained else None)
    return (f"robot overlay mismatch: the policy was trained with {trained_desc}, the sim robot runs with "
            f"{describe(sim_record)}; what this deploy shows is not the simulator the policy learned in "
            f"(pass --robot-overlay FILE or set {OVERLAY_ENV} to the training overlay)")


__all__ = ["META_KEY", "PROP_FILE", "PROP_HASH", "check_resume", "deploy_mismatch", "describe", "eval_mismatch",
           "export_props", "overlay_record", "run_overlay", "save_copy", "takes_overlay", "task_overlay"]
