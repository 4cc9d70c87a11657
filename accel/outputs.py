"""Output safety for every command: check the output (`out`) before any work, write atomically, replace only our own files.

The rules (the developers' guide: a command never deletes or overwrites what it did not create):

* an output that exists is refused unless the command was given `--overwrite`, and `--overwrite`
  replaces only the names the command itself writes; it never removes a folder it did not
  create, and the working directory, a parent of it, the home folder and `/` are never an
  output folder;
* `--out` is checked before any work (its type, and a probe file in the folder it goes into),
  so a bad one costs nothing and leaves nothing behind;
* every file is written to a temporary name next to its target and renamed into place at
  the end (`atomic_path`, `write_json_atomic`); a folder of outputs is staged in a hidden
  sibling folder and moved in when complete (`staged_dir`);
* deletion has one door, `remove_own`: it removes a file only when it is byte-for-byte a file accel
  recorded writing (a manifest: size + sha256 per file), keeps anything else and says so. A folder
  output's record is `.accel-manifest.json` in it (`read_manifest` / `publish_dir`), so `--overwrite`
  of a folder accel wrote replaces accel's files and keeps the user's, at every depth; "accel wrote
  it" never comes from file names.

Errors are `OutputError` (a `SettingError`: a ValueError and an AccelError) with a one-line message naming
the setting (`out`), which a command prints as its flag (`--out`).

Caches (FD reference statistics, schedule-cache calibrations, `accel tune` evaluations) live
under one root, `cache_dir()`: `$ACCEL_CACHE_DIR`, default `~/.cache/accel` (checked: a folder
accel can write in, else a one-line OutputError naming ACCEL_CACHE_DIR).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .errors import SettingError


class OutputError(SettingError):
    """An output path the command must not (or cannot) write; one line naming the setting whose path it is
    (``out``; a command prints its flag), or no setting (``OutputError("", detail)``: the cache folder)."""


_CHECKED_CACHE: set[str] = set()  # cache roots already found writable in this process



def _cannot_write(folder: Path) -> OSError | None:
    """None when a file can be created in `folder`, else the OSError: a probe file this call makes and
    removes at once (the only file it touches)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".accel-probe-", dir=folder)
    except OSError as exc:
        return exc
    os.close(fd)
    os.unlink(probe)
    return None

def cache_dir(*parts: str) -> Path:
    """`$ACCEL_CACHE_DIR/<parts>` (default `~/.cache/accel/<parts>`): where accel keeps its caches.

    The root is checked once per process (a folder, or creatable, and writable: a real probe file), so a
    cache that is a file or read-only is one OutputError line naming ACCEL_CACHE_DIR, not a traceback later.
    """
    env = os.environ.get("ACCEL_CACHE_DIR")
    root = Path(env) if env else Path.home() / ".cache" / "accel"
    if str(root) not in _CHECKED_CACHE:
        what = f"ACCEL_CACHE_DIR {_short(root)}" if env else f"the cache folder {root}"
        fix = "point ACCEL_CACHE_DIR at a folder accel may write in"
        _check_length(root, what)
        base = _nearest_existing(root)
        if not base.is_dir():
            raise OutputError("", f"{what}: {base} is a file, not a folder; {fix}")
        exc = _cannot_write(base)
        if exc is not None:
            raise OutputError("", f"{what}: cannot write in {base} ({exc.strerror or exc}); {fix}")
        _CHECKED_CACHE.add(str(root))
    return Path(root, *parts)


# ----------------------------------------------------------------------------- checks before work
NAME_RESERVE = 32  # bytes a name may grow by: hidden stage/temporary names (".NAME.tmp-XXXXXXXX"), ".ckpt.safetensors"


def _short(path: str | os.PathLike, keep: int = 60) -> str:
    """`path` shortened for a one-line message (the middle of a very long path elided)."""
    s = str(path)
    return s if len(s) <= keep else f"{s[:keep // 2 - 2]}...{s[-(keep // 2 - 1):]}"


def _limits() -> tuple[int, int]:
    """(longest name, longest path) in bytes on this system (POSIX defaults 255 / 4096 where not known)."""
    try:
        return os.pathconf("/", "PC_NAME_MAX"), os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 255, 4096


def _check_length(path: str | os.PathLike, setting: str) -> Path:
    """OutputError (one line naming `setting`) when a name in `path`, or the whole path, is longer than the file
    system takes, checked before anything touches the disk (else OSError 36 "File name too long" later)."""
    p = Path(path)
    name_max, path_max = _limits()
    for part in p.parts:
        n = len(os.fsencode(part))
        if n + NAME_RESERVE > name_max:
            raise OutputError(setting, f"{_short(p)}: a name in it is {n} bytes long; names up to "
                              f"{name_max - NAME_RESERVE} bytes work here: choose a shorter name")
    n = len(os.fsencode(str(p.absolute())))
    if n + NAME_RESERVE > path_max:
        raise OutputError(setting, f"{_short(p)}: the path is {n} bytes long; paths up to {path_max - NAME_RESERVE} "
                          "bytes work here: choose a shorter one")
    return p


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


def check_writable(folder: Path, setting: str, shown: Path) -> None:
    """OutputError unless a file can be created in `folder` (or in its nearest existing parent when it
    does not exist yet): a real probe file, created and removed, since permission bits lie for root
    and for /proc-like file systems."""
    _check_length(shown, setting)
    base = _nearest_existing(_check_length(folder, setting))
    if not base.is_dir():
        raise OutputError(setting, f"{shown}: {base} is not a folder")
    exc = _cannot_write(base)
    if exc is not None:
        raise OutputError(setting, f"{shown}: cannot write in {base} ({exc.strerror or exc})")


def check_file_output(path: str | os.PathLike, overwrite: bool, setting: str = "out",
                      companions: Iterable[str] = (), writer: str = "") -> Path:
    """Check a file output (and `companions`, names written next to it) before any work; returns the path.

    With `overwrite` and a `writer`, an existing target must be a file accel recorded writing there
    (`record_written`: the folder's manifest), unchanged since: a user's file is refused, not replaced."""
    p = _check_length(path, setting)
    if not p.name or p.name in (".", ".."):
        raise OutputError(setting, f"{path}: give a file name")
    if p.is_dir():
        raise OutputError(setting, f"{p} is a folder; give a file name")
    for target in [p, *(p.with_name(n) for n in companions)]:
        if target.exists() or target.is_symlink():
            if not target.is_file() or target.is_symlink():
                raise OutputError(setting, f"{p}: {target} exists and is not a plain file; choose another name")
            if not overwrite:
                raise OutputError(setting, f"{p}: {target} exists; choose another name (or overwrite to replace it)",
                                  also=("overwrite",))
            if writer and not is_own(target, read_manifest(target.parent).get(target.name)):
                raise OutputError(setting, f"{p}: {target} is not a file accel wrote there (not in {MANIFEST}, or "
                                  "changed since); overwrite replaces only accel's files: choose another name",
                                  also=("overwrite",))
    check_writable(p.parent, setting, p)
    return p


def _folder_output(path: str | os.PathLike, setting: str, example: str = "") -> Path:
    """`path` as a Path, refused when it is too long, exists as a file or is a protected folder (`_protected`)."""
    p = _check_length(path, setting)
    if p.exists() and not p.is_dir():
        raise OutputError(setting, f"{p} exists and is not a folder")
    why = _protected(p)
    if why:
        raise OutputError(setting, f"{p} {why}; give a folder of its own{example}", also=(setting,) if example else ())
    return p


def check_dir_output(path: str | os.PathLike, names: Iterable[str], overwrite: bool, setting: str = "out") -> Path:
    """Check an output folder the command writes the files `names` into (other files in it are left alone).

    With `overwrite`, an existing name must be a file accel recorded writing there, unchanged since
    (`read_manifest`): a user's file of the same name is refused, not replaced."""
    p = _folder_output(path, setting, f", e.g. {setting} {Path(path).resolve().name or 'out'}-run")
    records = read_manifest(p) if p.is_dir() else {}
    for name in names:
        t = p / name
        if t.exists() or t.is_symlink():
            if not t.is_file() or t.is_symlink():
                raise OutputError(setting, f"{p}: {t} exists and is not a plain file; choose another folder")
            if not overwrite:
                raise OutputError(setting, f"{p}: {t} exists; choose a new folder (or overwrite to replace "
                                  "the files this command wrote)", also=("overwrite",))
            if not is_own(t, records.get(name)):
                raise OutputError(setting, f"{p}: {t} is not a file accel wrote there (not in {MANIFEST}, or changed "
                                  "since); overwrite replaces only accel's files: move it or choose another folder",
                                  also=("overwrite",))
    check_writable(p, setting, p)
    return p


def check_new_dir(path: str | os.PathLike, setting: str = "out", overwrite: bool = False,
                  writer: str = "", hint: str = "", hint_also: tuple[str, ...] = ()) -> Path:
    """Check an output folder that the command fills as a whole (a pipeline folder).

    It must be new or empty; with `overwrite`, it may instead be a folder an earlier `accel <writer>`
    wrote: one whose manifest (`read_manifest`) records files by `writer`. Then only those files are
    replaced (`publish_dir`); the user's files in it stay.
    """
    p = _folder_output(path, setting)
    if p.is_dir() and any(p.iterdir()):
        if not overwrite:
            raise OutputError(setting, f"{p} exists and is not empty; choose a new folder{hint}", also=hint_also)
        if not writer or not any(r.get("by") == writer for r in read_manifest(p).values()):
            raise OutputError(setting, f"{p} holds files accel did not write (no {MANIFEST} of an `accel "
                              f"{writer or 'this command'}` run there); overwrite replaces only a folder accel "
                              "wrote: choose a new folder", also=("overwrite",))
    check_writable(p, setting, p)
    return p


def check_not_input(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike], setting: str = "out") -> None:
    """OutputError when the output folder is, holds or lies inside a folder the command reads (`inputs`:
    setting -> path); writing there would replace the model being read."""
    o = Path(out).absolute().resolve()
    for name, path in inputs.items():
        i = Path(path)
        try:
            if not i.exists():
                continue  # a hub id or an embedded model's name: nothing on disk to replace
        except OSError:  # a name too long to be a path: not a folder either
            continue
        i = i.absolute().resolve()
        if o == i or o in i.parents:
            raise OutputError(setting, f"{out} {'is' if o == i else 'holds'} the {name} folder this command "
                              "reads; write to a new folder", also=(name,))


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


# ----------------------------------------------------------------------------- what accel wrote; the deletion door
MANIFEST = ".accel-manifest.json"  # in a folder output: the files accel wrote there
MANIFEST_FORMAT = "accel-outputs/1"
_MANIFEST_BYTES = 16 << 20
_SCRATCH: set[str] = set()  # hidden folders this process made with mkdtemp (stages), removable as a whole


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies a file accel wrote: its size and SHA-256."""
    return {"size": os.path.getsize(path), "sha256": sha256_file(path)}


def _safe_rel(rel: Any) -> bool:
    parts = rel.split("/") if isinstance(rel, str) else []
    return bool(parts) and not rel.startswith("/") and all(q not in ("", ".", "..") for q in parts)


def read_manifest(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """{relative path: {"size", "sha256", "by"}} of the files accel recorded writing in `folder` ({} when it
    has no readable manifest: then nothing in it counts as accel's)."""
    f = Path(folder) / MANIFEST
    try:
        if f.is_symlink() or not f.is_file() or f.stat().st_size > _MANIFEST_BYTES:
            return {}
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    files = doc.get("files") if isinstance(doc, dict) and doc.get("format") == MANIFEST_FORMAT else None
    if not isinstance(files, dict):
        return {}
    return {rel: rec for rel, rec in files.items() if _safe_rel(rel) and isinstance(rec, dict)
            and isinstance(rec.get("sha256"), str) and isinstance(rec.get("size"), int)}


def write_manifest(folder: str | os.PathLike, records: Mapping[str, Mapping[str, Any]]) -> Path:
    """Record `records` (relative path -> file_record + "by") as the files accel wrote in `folder`."""
    return write_json_atomic(Path(folder) / MANIFEST, {"format": MANIFEST_FORMAT, "files": dict(sorted(records.items()))})


def record_written(paths: Iterable[str | os.PathLike], writer: str) -> None:
    """Record files a command just wrote (a file output and its companions) in their folder's manifest, so a
    later `--overwrite` may replace them and nothing else (`check_file_output`)."""
    by_folder: dict[Path, list[Path]] = {}
    for p in map(Path, paths):
        by_folder.setdefault(p.parent, []).append(p)
    for folder, files in by_folder.items():
        records = {rel: rec for rel, rec in read_manifest(folder).items() if (folder / rel).is_file()}
        records.update({p.name: {**file_record(p), "by": writer} for p in files})
        write_manifest(folder, records)


def is_own(path: str | os.PathLike, record: Mapping[str, Any] | None) -> bool:
    """Whether `path` is a plain file with exactly the size and SHA-256 accel recorded for it."""
    p = Path(path)
    if not record or p.is_symlink() or not p.is_file():
        return False
    if "size" in record and p.stat().st_size != record["size"]:
        return False
    return sha256_file(p) == record.get("sha256")


def notice(text: str) -> None:
    """One line on stderr about files accel left in place."""
    print(f"accel: {text}", file=sys.stderr)


def remove_own(root: str | os.PathLike, records: Mapping[str, Mapping[str, Any]] | None,
               names: Iterable[str] | None = None, quiet: bool = False) -> list[Path]:
    """THE deletion door: every removal in accel goes through here.

    Removes each of `names` (relative to `root`; default: every recorded name) only when it is
    byte-for-byte the file accel recorded (`records`: a manifest, `is_own`), then the folders the
    removals left empty. Anything else stays, and a notice names it (unless `quiet`); returns what
    stayed. `records=None` removes `root` as a whole, allowed only for a hidden scratch folder this
    process made (`staged_dir`'s stage), which holds nothing but what accel put there.
    """
    root = Path(root)
    if records is None:
        key = str(root.absolute())
        if key not in _SCRATCH:
            raise ValueError(f"remove_own: {root} is not a scratch folder accel made; give its records")
        shutil.rmtree(root, ignore_errors=True)
        _SCRATCH.discard(key)
        return []
    kept, emptied = [], set()
    for rel in list(records) if names is None else names:
        p = root / rel
        if not _safe_rel(rel) or not (p.exists() or p.is_symlink()):
            continue
        if is_own(p, records.get(rel)):
            p.unlink()
            emptied.update(root / q for q in Path(rel).parents if str(q) != ".")
        else:
            kept.append(p)
    for d in sorted(emptied, key=lambda d: len(d.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()  # only a folder the removals left empty
    if kept and not quiet:
        notice(f"kept {len(kept)} file(s) accel did not write or that changed since: {_listing(kept, root)}")
    return kept


def _listing(paths: list[Path], root: Path, most: int = 12) -> str:
    names = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _scratch(prefix: str, parent: Path) -> Path:
    """A hidden temporary folder in `parent` with a plain mkdir's permissions, registered as scratch."""
    stage = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(stage, 0o777 & ~_umask())  # a plain mkdir's permissions, not mkdtemp's 0700
    _SCRATCH.add(str(stage.absolute()))
    return stage


# ----------------------------------------------------------------------------- staged folders
@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, writer: str = "accel", quiet: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a hidden temporary folder next to `out`; when the block ends, move what it holds into `out`
    (`publish_dir`: accel's earlier files replaced, the user's kept). On an error the stage, and any
    parent folders made for it, are removed."""
    out = Path(out)
    made = []
    parent = out.absolute().parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    for d in reversed(made):
        d.mkdir()
    stage = _scratch(f".{out.name}.tmp-", out.absolute().parent)
    try:
        yield stage
        publish_dir(stage, out, writer, quiet)
    except BaseException:
        remove_own(stage, None)
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()  # only if still empty
        raise


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.name != MANIFEST)


def publish_dir(stage: Path, out: Path, writer: str = "accel", quiet: Iterable[str] = ()) -> None:
    """Move every file of `stage` into `out` and record them in `out`'s manifest as written by `writer`.

    A new `out` is the stage renamed. In an existing one, each file lands at its path (folders merged,
    never swapped), the files an earlier `writer` run recorded and this one does not write go through
    `remove_own`, and everything else stays, named in a notice (except the top-level entries in `quiet`,
    e.g. distill's checkpoints/). Before anything moves, an existing target that is not accel's
    unchanged file (or a file where a folder goes) is an OutputError: nothing is replaced then.
    """
    files = _files(stage)
    records = {rel: {**file_record(stage / rel), "by": writer} for rel in files}
    if not out.exists():
        write_manifest(stage, records)
        os.replace(stage, out)
        _SCRATCH.discard(str(stage.absolute()))
        return
    old = read_manifest(out)
    for rel in files:
        dst = out / rel
        for q in reversed(Path(rel).parents[:-1]):
            if (out / q).is_symlink() or ((out / q).exists() and not (out / q).is_dir()):
                raise OutputError("", f"{out}: {out / q} is where accel writes a folder; move it away and run again")
        if (dst.exists() or dst.is_symlink()) and not is_own(dst, old.get(rel)):
            raise OutputError("", f"{out}: {dst} is not a file accel wrote there (not in {MANIFEST}, or changed since); "
                              "move it away and run again")
    for rel in files:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, out / rel)
    stale = [rel for rel, rec in old.items() if rec.get("by") == writer and rel not in records]
    changed = remove_own(out, old, stale, quiet=True)
    others = {rel: rec for rel, rec in old.items() if rec.get("by") != writer and (out / rel).is_file()}
    write_manifest(out, {**others, **records})
    for d in sorted((p for p in stage.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        d.rmdir()  # every file moved out: only empty folders are left, removed without deleting anything
    stage.rmdir()
    _SCRATCH.discard(str(stage.absolute()))
    mine = {*others, *records, MANIFEST}
    theirs = [out / rel for rel in _files(out) if rel not in mine and rel.split("/")[0] not in set(quiet)]
    kept = changed + [p for p in theirs if p not in changed]
    if kept:
        notice(f"{out}: replaced accel's files and kept {len(kept)} file(s) accel did not write: {_listing(kept, out)}")
