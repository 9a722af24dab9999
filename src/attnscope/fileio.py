"""Atomic writes: every file that records a result is written to a temporary name, then renamed.

Like `errors`, this module sits below every layer: any module may import it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from attnscope.errors import DataError, InputError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results get the permissions of any new file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; it becomes `path` only if the block succeeds.

    An absent or empty `path` is simply taken. A folder with content is replaced only with
    `replace=True` (the caller vouches that it may go): it is moved aside, the new folder renamed in,
    and only then is the old one removed. Nothing but the temporary folders this call made is ever
    deleted. The temporary folders are named `.<name>.XXXXXXXX.partial` (and `.old`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; results get the permissions of any new folder
    try:
        yield tmp
        _install(tmp, path, replace)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, path: Path, replace: bool) -> None:
    """Rename `tmp` to `path`; an existing `path` with content is moved aside first (if `replace`)."""
    try:
        os.rename(tmp, path)  # atomic; also takes the place of an empty folder
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        if not replace:
            raise InputError(f"{path} exists and is not empty; nothing was replaced") from None
    old = move_aside(path)
    try:
        os.rename(tmp, path)
    except OSError:
        os.rename(old, path)  # put the old output back
        raise
    shutil.rmtree(old, ignore_errors=True)


def move_aside(path: Path) -> Path:
    """Rename folder `path` to a new `.<name>.XXXXXXXX.old` beside it (content untouched); returns that name."""
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.rename(path, old)  # onto the empty folder just made
    return old


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def inside(root: Path, relative: str, what: str) -> Path:
    """`root / relative`, refused (`DataError` naming `what`) when it is absolute or leaves `root` (`..`, links)."""
    if Path(relative).is_absolute():
        raise DataError(f"{what} is an absolute path; paths in a data file are relative to its folder {root}")
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise DataError(f"{what} points outside its folder {root}; refusing to read it")
    return target


def regular(path: str | Path, what: str, error: type[Exception] = DataError) -> Path:
    """`path`, once its type is known to be a regular file (links followed); a FIFO, device, socket or folder raises
    `error` naming `what`, so nothing ever blocks on a FIFO or reads /dev/zero forever."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise error(f"{_named(what, path)} cannot be read: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO, device or socket"
        raise error(f"{_named(what, path)} is {kind}, not a regular file")
    return path


def open_regular(path: str | Path, what: str, error: type[Exception] = DataError) -> BinaryIO:
    """`path` opened for reading once it is known to be a regular file: its type is checked on the open file
    itself (no race with a swap to a FIFO), and opening a FIFO this way never waits for a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise error(f"{_named(what, path)} cannot be read: {e.strerror or e}") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise error(f"{_named(what, path)} is not a regular file (a folder, FIFO, device or socket)")
    os.set_blocking(fd, True)
    return f


def read_regular(path: str | Path, what: str, error: type[Exception] = DataError) -> bytes:
    """The bytes of regular file `path` (`open_regular`: never blocks on a FIFO, never reads /dev/zero)."""
    with open_regular(path, what, error) as f:
        return f.read()


def _named(what: str, path: str | Path) -> str:
    return f"{what} {path}" if what else str(path)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line; the whole file is rewritten atomically so a crash never leaves half a line."""
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    write_bytes(path, old + (json.dumps(record, default=_json_default) + "\n").encode("utf-8"))


def read_jsonl(path: str | Path, error: type[Exception] = DataError) -> list[tuple[int, dict[str, Any]]]:
    """The (line number, object) records of a JSON-lines file, blank lines skipped; an unreadable file, a line
    that is not JSON or not an object raises `error` naming the file and the line."""
    path = Path(path)
    try:
        lines = read_regular(path, "", error).decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise error(f"{path} is not readable: {e}") from None
    records = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path} line {i} is not JSON: {e}") from None
        if not isinstance(record, dict):
            raise error(f"{path} line {i}: expected an object, got {type(record).__name__}")
        records.append((i, record))
    return records


def save_tensors(path: str | Path, tensors: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    """Save tensors as safetensors atomically; `metadata` (JSON-able) is stored in the file's header."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {"attnscope": json.dumps(metadata, default=_json_default)} if metadata is not None else None
    with atomic_path(path) as tmp:
        try:
            save_file(flat, str(tmp), metadata=meta)
        except Exception as e:  # safetensors' SafetensorError is no OSError, even for a full disk
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None
        os.chmod(tmp, 0o666 & ~_umask())  # save_file recreates the file 0600; results are 0644 like the rest


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Run `writer(tmp_path)` and move its file to `path` atomically (for PNGs, npy, ...)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def _json_default(obj: Any) -> Any:
    torch = sys.modules.get("torch")  # not imported here: without torch loaded there are no tensors
    if torch is not None and isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
