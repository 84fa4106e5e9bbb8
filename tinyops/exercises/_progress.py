"""Which exercises were started and which pass: a small JSON file in the user's state directory.

The file is ``$TINYOPS_STATE_DIR/progress.json`` when that variable is set, else
``$XDG_STATE_HOME/tinyops/progress.json``, else ``~/.local/state/tinyops/progress.json``. It is written
atomically (a temporary file in the same directory, then a rename), so a check interrupted halfway never
leaves half a file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..runs import atomic_path


def state_dir() -> Path:
    if os.environ.get("TINYOPS_STATE_DIR"):
        return Path(os.environ["TINYOPS_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "tinyops"


def progress_path() -> Path:
    return state_dir() / "progress.json"


def load() -> dict[str, dict[str, Any]]:
    """``{exercise: {"file": path, "passed": bool, "checked": time, "first_passed": time | None}}``; an unreadable
    or malformed file reads as no progress (it is rewritten at the next check)."""
    try:
        data = json.loads(progress_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    exercises = data.get("exercises") if isinstance(data, dict) else None
    return {k: v for k, v in exercises.items() if isinstance(v, dict)} if isinstance(exercises, dict) else {}


def _save(progress: dict[str, dict[str, Any]]) -> None:
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "progress.json") as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "exercises": progress}, f, indent=1, sort_keys=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def record_start(name: str, file: Path) -> None:
    progress = load()
    entry = progress.setdefault(name, {"passed": False, "first_passed": None})
    entry["file"] = str(file)
    _save(progress)


def record(name: str, file: Path, passed: bool) -> None:
    """The result of a check of ``file``."""
    progress = load()
    entry = progress.setdefault(name, {"first_passed": None})
    entry.update(file=str(file), passed=bool(passed), checked=_now())
    if passed and not entry.get("first_passed"):
        entry["first_passed"] = entry["checked"]
    try:
        _save(progress)
    except OSError:  # a read-only home: the check's answer matters more than its record
        pass
