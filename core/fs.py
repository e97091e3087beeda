"""Artifact IO on any filesystem, and publication without a rename.

Every read and write of a project artifact (inputs, the run directory, the serving base path)
goes through this module, so a path may be local, ``gs://``, ``s3://``, ``hdfs://`` or TF's
``ram://``. Two clients do the work, chosen per path:

* ``tf.io.gfile`` for the schemes TensorFlow has a filesystem for (local, ``gs://``, ``ram://``
  and any TF filesystem plugin loaded into the process): the same client that writes the
  SavedModels, checkpoints and TF Transform outputs beside these files.
* Beam's ``FileSystems`` for the others (``s3://``, ``hdfs://``, ``azfs://``: TF 2.21 has none),
  and for ``gs://`` when ``STORAGE_EMULATOR_HOST`` is set: TF's GCS client cannot be pointed at
  an emulator, Beam's (google-cloud-storage) honours the variable.

Object stores have no rename, so a directory is published without one (``publish_dir``)::

    <final>/
      _COMMITTED                {"attempt": ".attempt-<id>", "committed_at": ...}  written last
      .attempt-<id>/ ...        the committed output
      .attempt-<other>/ ...     a killed or superseded attempt: never read, removed

A writer fills a fresh attempt directory, then writes the marker (one small object: it
appears whole or not at all) and removes the other attempts. Readers find the output through
the marker (``published``); an attempt without it is never read, whatever it holds. A single
file is written the same way in small (``write_atomic``): a temporary file renamed over it
where the filesystem renames (local), a direct write where objects appear whole on close.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import time
import uuid
from typing import Any, Iterator

COMMITTED = "_COMMITTED"
ATTEMPT_PREFIX = ".attempt-"

_BEAM_SCHEMES: set[str] = set()  # schemes found unknown to TF in this process


# --- paths

def scheme(path: str) -> str:
    """``'gs'`` for ``gs://b/x``; ``''`` for a local path."""
    head, sep, _ = str(path).partition("://")
    return head.lower() if sep and "/" not in head else ""


def is_local(path: str) -> bool:
    return scheme(path) in ("", "file")


def join(base: str, *parts: str) -> str:
    """``os.path.join`` for local paths, ``/`` for URLs."""
    return os.path.join(base, *parts) if is_local(base) else posixpath.join(base, *parts)


def absolute(path: str) -> str:
    """A local path made absolute; a URL unchanged (without a trailing ``/``)."""
    return os.path.abspath(path) if is_local(path) else str(path).rstrip("/")


def dirname(path: str) -> str:
    return os.path.dirname(path) if is_local(path) else posixpath.dirname(path.rstrip("/"))


def basename(path: str) -> str:
    return os.path.basename(path) if is_local(path) else posixpath.basename(path.rstrip("/"))


def relative(path: str, start: str) -> str:
    """``path`` relative to ``start`` (both local, or both under the same URL prefix)."""
    if is_local(path):
        return os.path.relpath(path, start)
    start = start.rstrip("/") + "/"
    return path[len(start):] if path.startswith(start) else path


# --- which client

def _beam(path: str) -> bool:
    s = scheme(path)
    if s in ("", "file", "ram"):
        return False
    if s == "gs":
        return bool(os.environ.get("STORAGE_EMULATOR_HOST"))
    if s in _BEAM_SCHEMES:
        return True
    import tensorflow as tf

    try:
        tf.io.gfile.exists(path)
    except tf.errors.UnimplementedError:  # "File system scheme 's3' not implemented"
        _BEAM_SCHEMES.add(s)
        return True
    return False


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _beam_fs():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _uncompressed():
    from apache_beam.io.filesystem import CompressionTypes

    return CompressionTypes.UNCOMPRESSED


def _beam_files(pattern: str) -> list:
    from apache_beam.io.filesystem import BeamIOError

    try:
        return _beam_fs().match([pattern])[0].metadata_list
    except BeamIOError:  # "no files found" on some filesystems
        return []


# --- queries

def exists(path: str) -> bool:
    """Whether a file or directory (on an object store: an object or a prefix) exists."""
    if not _beam(path):
        return _gfile().exists(path)
    return _beam_fs().exists(path) or isdir(path)


def isdir(path: str) -> bool:
    if not _beam(path):
        return _gfile().isdir(path)
    return bool(_beam_files(path.rstrip("/") + "/**"))


def isfile(path: str) -> bool:
    if not _beam(path):
        return _gfile().exists(path) and not _gfile().isdir(path)
    return _beam_fs().exists(path)


def glob(pattern: str) -> list[str]:
    """Files (and, locally, directories) matching ``pattern``, sorted."""
    if not _beam(pattern):
        return sorted(_gfile().glob(pattern))
    return sorted(m.path for m in _beam_files(pattern))


def listdir(path: str) -> list[str]:
    """Names of the entries directly under ``path`` (no trailing ``/``), sorted; [] when absent."""
    if not _beam(path):
        if not _gfile().isdir(path):
            return []
        return sorted({n.rstrip("/") for n in _gfile().listdir(path)})
    prefix = path.rstrip("/") + "/"
    return sorted({m.path[len(prefix):].split("/", 1)[0] for m in _beam_files(prefix + "**")})


def walk_files(path: str) -> list[str]:
    """Every file under ``path`` (recursive), as paths relative to it, sorted."""
    if not _beam(path):
        if not _gfile().isdir(path):
            return []
        out = []
        for root, _, files in _gfile().walk(path):
            out += [relative(join(root, f), path) for f in files]
        if scheme(path) == "ram":  # TF's ram:// lists "a.b/x" under "a" too, as ".b/x": keep what exists
            out = [rel for rel in out if _gfile().exists(join(path, rel))]
        return sorted(out)
    prefix = path.rstrip("/") + "/"
    return sorted(m.path[len(prefix):] for m in _beam_files(prefix + "**") if not m.path.endswith("/"))


def walk_dirs(path: str) -> list[str]:
    """Every directory under ``path`` (recursive), relative to it, sorted; on an object store the
    prefixes its files imply (an object store has no empty directory)."""
    if not _beam(path):
        if not _gfile().isdir(path):
            return []
        out = []
        for root, dirs, _ in _gfile().walk(path):
            out += [relative(join(root, d), path) for d in dirs]
        if scheme(path) == "ram":
            out = [rel for rel in out if _gfile().isdir(join(path, rel))]
        return sorted(out)
    out = set()
    for rel in walk_files(path):
        parts = rel.split("/")[:-1]
        out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(out)


def size(path: str) -> int:
    if not _beam(path):
        return _gfile().stat(path).length
    return _beam_files(path)[0].size_in_bytes


def mtime(path: str) -> float:
    """Last modification, seconds since the epoch (locally to the nanosecond: TF's local stat
    has whole seconds)."""
    if is_local(path):
        return os.stat(path).st_mtime_ns / 1e9
    if not _beam(path):
        return _gfile().stat(path).mtime_nsec / 1e9
    return _beam_files(path)[0].last_updated_in_seconds


# --- reading and writing

def open_file(path: str, mode: str = "r"):
    """A file object for ``mode`` ('r', 'rb', 'w', 'wb'); 'w' creates the parent directories."""
    if mode not in ("r", "rb", "w", "wb"):
        raise ValueError(f"unsupported mode {mode!r}")
    if not _beam(path):
        if "w" in mode and dirname(path):
            _gfile().makedirs(dirname(path))
        if "w" in mode and scheme(path) == "ram" and _gfile().exists(path):
            _gfile().remove(path)  # TF's ram:// appends to an existing file instead of truncating it
        return _gfile().GFile(path, mode)
    fs = _beam_fs()
    raw = fs.create(path, compression_type=_uncompressed()) if "w" in mode else fs.open(path, compression_type=_uncompressed())
    return raw if "b" in mode else io.TextIOWrapper(raw, encoding="utf-8")


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    with open_file(path, "wb") as f:
        f.write(data)


def write_atomic(path: str, data: bytes | str) -> None:
    """Writes ``path`` so that a reader sees the old content or the new, never a part.

    Local: a temporary sibling renamed over ``path``. Elsewhere: one direct write (GCS and S3
    objects appear whole when the upload ends; ``ram://`` lives and dies with the process)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not is_local(path):
        write_bytes(path, data)
        return
    tmp = join(dirname(path) or ".", f".tmp-{basename(path)}-{uuid.uuid4().hex[:12]}")
    try:
        write_bytes(tmp, data)
        _gfile().rename(tmp, path, overwrite=True)
    except BaseException:
        with contextlib.suppress(Exception):
            _gfile().remove(tmp)
        raise


def makedirs(path: str) -> None:
    """Creates ``path`` and its parents (a no-op on object stores, which have no directories)."""
    if not _beam(path):
        _gfile().makedirs(path)
        return
    from apache_beam.io.filesystem import BeamIOError

    with contextlib.suppress(BeamIOError, OSError):
        _beam_fs().mkdirs(path)


def remove(path: str) -> None:
    """Deletes the file ``path`` (no error when it is absent)."""
    if not _beam(path):
        with contextlib.suppress(Exception):
            _gfile().remove(path)
        return
    if _beam_fs().exists(path):
        _beam_fs().delete([path])


def rmtree(path: str) -> None:
    """Deletes ``path`` and everything under it (no error when it is absent)."""
    if not _beam(path):
        if not _gfile().isdir(path):
            if _gfile().exists(path):
                _gfile().remove(path)
            return
        if scheme(path) == "ram":  # its recursive delete trips over the entries ram:// lists wrongly
            for rel in walk_files(path):
                _gfile().remove(join(path, rel))
            with contextlib.suppress(Exception):
                _gfile().rmtree(path)
            return
        _gfile().rmtree(path)
        return
    files = [join(path, f) for f in walk_files(path)]
    if files:
        _beam_fs().delete(files)
    remove(path)


def copy_file(src: str, dst: str) -> None:
    """Copies one file (between any two filesystems), replacing ``dst``."""
    if not _beam(src) and not _beam(dst) and scheme(src) == scheme(dst):
        if dirname(dst):
            _gfile().makedirs(dirname(dst))
        _gfile().copy(src, dst, overwrite=True)
        return
    with open_file(src, "rb") as f:
        data = f.read()
    write_bytes(dst, data)


def copy_tree(src: str, dst: str, last: tuple[str, ...] = ()) -> list[str]:
    """Copies every file under ``src`` to the same relative path under ``dst``; the files named
    in ``last`` (relative paths) are copied after all the others, in that order. Returns the
    relative paths copied."""
    files = walk_files(src)
    ordered = [f for f in files if f not in last] + [f for f in last if f in files]
    for rel in ordered:
        copy_file(join(src, rel), join(dst, rel))
    return ordered


# --- JSON

def read_json(path: str, what: str = "file") -> Any:
    """The JSON in ``path``; ``InputError`` naming ``what`` when it is missing or malformed."""
    from core.errors import InputError

    try:
        text = read_text(path)
    except Exception:  # tf.errors.NotFoundError, FileNotFoundError, BeamIOError; other errors stay as raised
        if not exists(path):
            raise InputError(f"{what} not found: {path}") from None
        raise
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{what} is not valid JSON: {path} ({e})") from None


def write_json_atomic(path: str, obj: Any) -> None:
    """``obj`` as indented JSON (numpy scalars and arrays allowed), via ``write_atomic``."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# --- publication without a rename

def committed_attempt(final: str) -> str | None:
    """The path of ``final``'s committed attempt (its ``_COMMITTED`` marker), or None."""
    marker = join(final, COMMITTED)
    try:
        data = json.loads(read_text(marker))
        name = data["attempt"]
    except Exception:  # noqa: BLE001  absent (or, never written by this module, unreadable)
        return None
    if not (isinstance(name, str) and name.startswith(ATTEMPT_PREFIX) and "/" not in name):
        return None
    return join(final, name)


def published(final: str) -> str:
    """Where the output published as ``final`` is read: its committed attempt; ``final`` itself
    when it has no marker (an output laid out by hand, or none yet: readers then find nothing)."""
    return committed_attempt(final) or final


def is_published(final: str) -> bool:
    return committed_attempt(final) is not None


@contextlib.contextmanager
def publish_dir(final: str) -> Iterator[str]:
    """Yields a fresh attempt directory under ``final``; on success commits it (``_COMMITTED``
    written last) and removes every other attempt; on an exception removes the attempt, and
    the previously committed output (if any) stays published. A kill at any point leaves
    either the old marker or the new one. One writer per ``final`` at a time."""
    name = f"{ATTEMPT_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    attempt = join(final, name)
    remove_stale_attempts(final)
    makedirs(attempt)
    try:
        yield attempt
    except BaseException:
        with contextlib.suppress(Exception):
            rmtree(attempt)
            if not listdir(final):  # a first attempt that failed leaves nothing at all
                rmtree(final)
        raise
    write_json_atomic(join(final, COMMITTED), {"attempt": name, "committed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    remove_stale_attempts(final)


def remove_stale_attempts(final: str) -> list[str]:
    """Deletes the attempt directories under ``final`` that its marker does not name (killed
    or superseded attempts). Returns what was removed."""
    keep = committed_attempt(final)
    removed = []
    for n in listdir(final):
        p = join(final, n)
        if n.startswith(ATTEMPT_PREFIX) and p != keep:
            rmtree(p)
            removed.append(p)
    return removed
