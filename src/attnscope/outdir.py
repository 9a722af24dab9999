"""Output folders of commands: what `--out` may be, one writer at a time, nothing half-written or lost.

- `--out` must be absent or empty, or hold an earlier output of the same command, and then only with
  `--overwrite`. An output is recognised by its marker `.attnscope-output.json`, which names the command
  and the files it wrote; a folder that also holds files the command did not write is never replaced.
- A writer holds `.<name>.lock` beside the folder (an exclusive `flock`, with its pid in the file), so a
  second writer of the same folder fails at once; the kernel drops the lock of a killed process.
- Commands that write their output in one go build it in `.<name>.XXXXXXXX.partial` beside it and rename
  it at the end (`fileio.atomic_dir`); what a killed run left there is removed by the next run of the same
  command, recognised by its marker.
- `--out` may not be a symbolic link, the current folder or one that holds it, or lie under a file.

Like `fileio`, this module sits below every layer.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attnscope import fileio
from attnscope.errors import InputError

MARKER = ".attnscope-output.json"
FORMAT = "attnscope-output/1"
_TEMP = r"[a-z0-9_]{8}\.(partial|old)"  # the names tempfile.mkdtemp gives fileio.atomic_dir's folders


def check(path: str | Path, command: str, overwrite: bool = False) -> bool:
    """Refuse (one-line `InputError`) an `--out` that `command` may not write; True if it replaces an output."""
    path = Path(path)
    if path.is_symlink():
        raise InputError(f"--out {path} is a symbolic link; give a folder, not a link to one")
    real = path.resolve()
    here = Path.cwd().resolve()
    if real == here or real in here.parents:
        raise InputError(f"--out {path} is the current folder or holds it; give a new folder")
    base = _nearest_existing(real.parent)
    if not base.is_dir():
        raise InputError(f"--out {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"--out {path}: cannot write in {base} (read-only or no permission)")
    if not path.exists():
        return False
    if not path.is_dir():
        raise InputError(f"--out {path} exists and is not a folder")
    if not any(path.iterdir()):
        return False
    if not overwrite:
        raise InputError(f"--out {path} exists and is not empty; pass --overwrite to replace an earlier "
                         f"`attnscope {command}` output")
    marker = read_marker(path)
    if marker is None or marker.get("command") != command:
        raise InputError(f"--out {path} does not hold an `attnscope {command}` output (no {MARKER} of it); "
                         "refusing to replace it")
    foreign = unlisted(path, marker.get("files", []))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(f"--out {path} holds files `attnscope {command}` did not write ({shown}); refusing to "
                         "replace it: move them away or give another folder")
    return True


@contextmanager
def building(path: str | Path, command: str, overwrite: bool = False) -> Iterator[Path]:
    """A fresh folder to write `command`'s output in; it becomes `path` (checked, locked) when the block succeeds."""
    path = Path(path)
    check(path, command, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock(path):
        replace = check(path, command, overwrite)  # again under the lock: another writer may have finished
        clear_stale(path, command)
        with fileio.atomic_dir(path, replace=replace) as partial:
            write_marker(partial, command, (), partial=True)
            yield partial
            write_marker(partial, command, files_under(partial))


@contextmanager
def lock(path: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of output `path` (`.<name>.lock` beside it, with this pid); yields the lock file."""
    import fcntl

    path = Path(path).resolve()  # "--out ." of a resumed run locks the folder by its real name
    file = path.parent / f".{path.name}.lock"
    while True:
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)  # never write through a planted link
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise InputError(f"{file} is a symbolic link, not an attnscope lock file; remove it") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise InputError(f"--out {path} is being written by another process (pid {_owner(file)}, lock file "
                             f"{file}); wait for it or give another folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(file).st_ino
        except FileNotFoundError:  # the previous owner removed it between our open and our lock
            same = False
        if same:
            break
        os.close(fd)
    owned = False
    try:
        old = os.read(fd, 64).decode("ascii", "replace").strip()
        if old and not old.isdigit():
            raise InputError(f"{file} exists and is not an attnscope lock file; remove it or give another --out")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        owned = True
        yield file
    finally:
        if owned:
            os.unlink(file)  # while still holding it: a writer that opened it meanwhile sees a new inode, retries
        os.close(fd)


def _owner(file: Path) -> str:
    try:
        return file.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def clear_stale(path: str | Path, command: str) -> list[Path]:
    """Remove the temporary folders beside `path` that a killed run of `command` left; returns them."""
    from attnscope import console

    path = Path(path).resolve()
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_TEMP}")
    removed = []
    for entry in sorted(path.parent.iterdir()) if path.parent.is_dir() else ():
        if not pattern.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        marker = read_marker(entry)
        if marker is not None and marker.get("command") == command:
            shutil.rmtree(entry)
        elif not any(entry.iterdir()):  # made, then killed before its marker was written
            entry.rmdir()
        else:
            continue
        removed.append(entry)
        console.note(f"removed {entry}, left by an interrupted `attnscope {command}`")
    return removed


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The marker of an output folder, or None when it has none (or one that is not ours)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT or not isinstance(marker.get("files"), list):
        return None
    return marker


def write_marker(folder: str | Path, command: str, files: Iterable[str], partial: bool = False) -> None:
    """Record that `command` wrote `files` (paths relative to `folder`; a name ending in "/" owns a sub-folder)."""
    marker: dict[str, Any] = {"format": FORMAT, "command": command, "files": sorted(files)}
    if partial:
        marker.update(partial=True, pid=os.getpid())
    fileio.write_json(Path(folder) / MARKER, marker)


def adopt(folder: str | Path, name: str) -> None:
    """Add `name` to the files of the output in `folder` (e.g. a report written into a run); no marker: nothing."""
    marker = read_marker(folder)
    if marker is not None and name not in marker["files"]:
        write_marker(folder, marker["command"], [*marker["files"], name])


def files_under(folder: str | Path) -> list[str]:
    """Every file (and link) under `folder`, relative and with "/" separators, but the marker."""
    folder = Path(folder)
    found = []
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            rel = (Path(root) / name).relative_to(folder).as_posix()
            if rel != MARKER:
                found.append(rel)
    return sorted(found)


def unlisted(folder: str | Path, files: Iterable[str]) -> list[str]:
    """Files under `folder` that `files` (exact names, or sub-folders ending in "/") does not name."""
    files = list(files)
    exact = set(files)
    folders = tuple(f for f in files if f.endswith("/"))
    return [f for f in files_under(folder) if f not in exact and not f.startswith(folders)]


def remove_listed(folder: str | Path, files: Iterable[str]) -> None:
    """Remove the files and sub-folders `files` names from `folder` (what a command wrote there), and the marker."""
    folder = Path(folder)
    for rel in [*files, MARKER]:
        target = folder / rel.rstrip("/")
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)


def check_file(path: str | Path, command: str, overwrite: bool, ours: Callable[[Path], bool]) -> bool:
    """Refuse (one-line `InputError`) a one-file `--out` that `command` may not write; True if it replaces one.

    The file must not be a link or a folder, nor lie under a file; an existing one is replaced only with
    `overwrite`, and only if `command` wrote it: `ours(path)` says so, or the marker of its folder lists it.
    """
    path = Path(path)
    if path.is_symlink():
        raise InputError(f"--out {path} is a symbolic link; give a file, not a link to one")
    if path.is_dir():
        raise InputError(f"--out {path} is a folder; give the file to write, e.g. {path / 'report.html'}")
    base = _nearest_existing(path.resolve().parent)
    if not base.is_dir():
        raise InputError(f"--out {path}: {base} is a file, not a folder")
    if not path.exists():
        return False
    if not path.is_file():
        raise InputError(f"--out {path} exists and is not a regular file")
    marker = read_marker(path.parent)
    if not (ours(path) or (marker is not None and path.name in marker["files"])):
        raise InputError(f"--out {path} exists and was not written by `attnscope {command}`; refusing to replace "
                         "it: give another file")
    if not overwrite:
        raise InputError(f"--out {path} exists; pass --overwrite to replace this earlier `attnscope {command}` output")
    return True


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
