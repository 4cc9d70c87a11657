"""Output safety for every command: check `--out` before any work, write atomically, replace only our own files.

The rules (the developers' guide: a command never deletes or overwrites what it did not create):

* an output that exists is refused unless the command was given `--overwrite`, and `--overwrite`
  replaces only the names the command itself writes; it never removes a folder it did not
  create, and the working directory, a parent of it, the home folder and `/` are never an
  output folder;
* `--out` is checked before any work (its type, and a probe file in the folder it goes into),
  so a bad one costs nothing and leaves nothing behind;
* every file is written to a temporary name next to its target and renamed into place at
  the end (`atomic_path`, `write_json_atomic`); a folder of outputs is staged in a hidden
  sibling folder and moved in when complete (`staged_dir`).

Errors are `OutputError` (a ValueError and an AccelError) with a one-line message naming the flag.

Caches (FD reference statistics, schedule-cache calibrations, `accel tune` evaluations) live
under one root, `cache_dir()`: `$ACCEL_CACHE_DIR`, default `~/.cache/accel`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import AccelError


class OutputError(AccelError, ValueError):
    """An output path the command must not (or cannot) write; the message is one line."""


def cache_dir(*parts: str) -> Path:
    """`$ACCEL_CACHE_DIR/<parts>` (default `~/.cache/accel/<parts>`): where accel keeps its caches."""
    return Path(os.environ.get("ACCEL_CACHE_DIR") or Path.home() / ".cache" / "accel", *parts)


def _protected(path: Path) -> str | None:
    """Why `path` may never be an output folder (None if it may)."""
    p = path.resolve()
    cwd = Path.cwd().resolve()
    if p == cwd:
        return "is the working directory"
    if p in cwd.parents:
        return "is a parent of the working directory"
    if p == Path(p.anchor):
        return "is the file-system root"
    with contextlib.suppress(RuntimeError, KeyError):
        if p == Path.home().resolve():
            return "is the home folder"
    return None


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(folder: Path, flag: str, shown: Path) -> None:
    """OutputError unless a file can be created in `folder` (or in its nearest existing parent when it
    does not exist yet): a real probe file, created and removed, since permission bits lie for root
    and for /proc-like file systems."""
    base = _nearest_existing(Path(folder))
    if not base.is_dir():
        raise OutputError(f"{flag} {shown}: {base} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".accel-probe-", dir=base)
    except OSError as exc:
        raise OutputError(f"{flag} {shown}: cannot write in {base} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def check_file_output(path: str | os.PathLike, overwrite: bool, flag: str = "--out",
                      companions: Iterable[str] = ()) -> Path:
    """Check a file output (and `companions`, names written next to it) before any work; returns the path."""
    p = Path(path)
    if not p.name or p.name in (".", ".."):
        raise OutputError(f"{flag} {path}: give a file name")
    if p.is_dir():
        raise OutputError(f"{flag} {p} is a folder; give a file name")
    for target in [p, *(p.with_name(n) for n in companions)]:
        if target.exists() or target.is_symlink():
            if not target.is_file() or target.is_symlink():
                raise OutputError(f"{flag} {p}: {target} exists and is not a plain file; choose another name")
            if not overwrite:
                raise OutputError(f"{flag} {p}: {target} exists; choose another name (or --overwrite to replace it)")
    check_writable(p.parent, flag, p)
    return p


def _folder_output(path: str | os.PathLike, flag: str, example: str = "") -> Path:
    """`path` as a Path, refused when it exists as a file or is a protected folder (`_protected`)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{flag} {p} exists and is not a folder")
    why = _protected(p)
    if why:
        raise OutputError(f"{flag} {p} {why}; give a folder of its own{example}")
    return p


def check_dir_output(path: str | os.PathLike, names: Iterable[str], overwrite: bool, flag: str = "--out") -> Path:
    """Check an output folder the command writes the files `names` into (other files in it are left alone)."""
    p = _folder_output(path, flag, f", e.g. {flag} {Path(path).resolve().name or 'out'}-run")
    for name in names:
        t = p / name
        if t.exists() or t.is_symlink():
            if not t.is_file() or t.is_symlink():
                raise OutputError(f"{flag} {p}: {t} exists and is not a plain file; choose another folder")
            if not overwrite:
                raise OutputError(f"{flag} {p}: {t} exists; choose a new folder (or --overwrite to replace "
                                  f"the files this command writes)")
    check_writable(p, flag, p)
    return p


def check_new_dir(path: str | os.PathLike, flag: str = "--out", overwrite: bool = False,
                  own: Iterable[str] = (), hint: str = "") -> Path:
    """Check an output folder that the command fills as a whole (a pipeline folder).

    It must be new or empty; with `overwrite`, it may instead be a folder this kind of command
    wrote before: one holding every name in `own` (e.g. model_index.json + pruning.json).
    """
    p = _folder_output(path, flag)
    if p.is_dir() and any(p.iterdir()):
        own = list(own)
        if not overwrite:
            raise OutputError(f"{flag} {p} exists and is not empty; choose a new folder{hint}")
        missing = [n for n in own if not (p / n).exists()]
        if missing or not own:
            raise OutputError(f"{flag} {p} holds files this command did not write (no {missing[0] if missing else 'marker'}); "
                              "--overwrite replaces only a folder it wrote: choose a new folder")
    check_writable(p, flag, p)
    return p


# ----------------------------------------------------------------------------- atomic writes
def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (shipped weights, checkpoint manifests)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_name(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # the permissions a plain open() would give, not mkstemp's 0600
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; renamed onto `path` when the block ends, removed if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary file renamed into place."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, doc: Any, indent: int | None = 2, **kwargs: Any) -> Path:
    """Strict JSON (no NaN/inf unless `allow_nan=True` is passed) written atomically."""
    kwargs.setdefault("allow_nan", False)
    return write_text_atomic(path, json.dumps(doc, indent=indent, **kwargs) + "\n")


# ----------------------------------------------------------------------------- staged folders
@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, remove_stale: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a hidden temporary folder next to `out`; when the block ends, move what it holds into `out`.

    A new `out` is the staged folder renamed; an existing one keeps every name the stage does not
    hold (the user's files), gets each staged name replaced, and loses the names in
    `remove_stale` (files of an earlier run of the same command that this run does not write).
    On an error the stage, and any parent folders made for it, are removed.
    """
    out = Path(out)
    made = []
    parent = out.absolute().parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    for d in reversed(made):
        d.mkdir()
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.absolute().parent))
    os.chmod(stage, 0o777 & ~_umask())  # a plain mkdir's permissions, not mkdtemp's 0700
    try:
        yield stage
        publish_dir(stage, out, remove_stale)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()  # only if still empty
        raise


def publish_dir(stage: Path, out: Path, remove_stale: Iterable[str] = ()) -> None:
    """Move the entries of `stage` into `out` (a rename when `out` does not exist), then remove `stage`."""
    if not out.exists():
        os.replace(stage, out)
        return
    names = {c.name for c in stage.iterdir()}
    for child in sorted(stage.iterdir()):
        dst = out / child.name
        if dst.is_dir() and not dst.is_symlink():
            trash = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=out))
            os.replace(dst, trash / dst.name)
            os.replace(child, dst)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(child, dst)
    for name in remove_stale:
        if name in names or "/" in name or name in ("", ".", ".."):
            continue
        old = out / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        elif old.exists() or old.is_symlink():
            old.unlink()
    stage.rmdir()
