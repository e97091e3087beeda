"""TF's ``ram://`` made a Beam filesystem too: a filesystem without a directory rename, in process.

TensorFlow's ``ram://`` is an in-memory filesystem of this process (SavedModels,
checkpoints, ``tf.data`` and ``tf.io.gfile`` reach it natively). Beam does not know the
scheme; ``RamFileSystem`` (registered with Beam on import: Beam finds ``FileSystem``
subclasses by their ``scheme()``) delegates every Beam call to ``tf.io.gfile``, so a Beam
pipeline run in this process (the DirectRunner ``in_memory``) reads and writes the same
files TF does.

``ram://`` has no real directories: renaming a directory moves only its entry and leaves
its files under the old name, the way an object store has no directory rename at all.
The project never renames a directory outside the local filesystem (``core.fs``); TF
Transform does (it writes its transform_fn in a temporary directory and renames it into
place; on ``gs://`` TF's GCS filesystem implements that as copy + delete).
``directory_renames_copy`` patches ``tf.io.gfile.rename`` for the ``ram://`` directories
TF Transform renames into that copy + delete, and records each one so a test can assert
that only TF Transform asked for one.

Use::

    import tests.fakes.ram_filesystem  # noqa: F401  (registers ram:// with Beam)
"""
from __future__ import annotations

import contextlib
import io

import tensorflow as tf
from apache_beam.io.filesystem import BeamIOError, CompressedFile, CompressionTypes, FileMetadata, FileSystem

SCHEME = "ram"


class RamFileSystem(FileSystem):
    """Beam ``FileSystem`` for ``ram://`` paths, backed by ``tf.io.gfile``."""

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/")] + [p.strip("/") for p in paths])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        tf.io.gfile.makedirs(path)

    def has_dirs(self):
        return True

    def _list(self, dir_or_prefix):
        if not tf.io.gfile.exists(dir_or_prefix):
            return
        if not tf.io.gfile.isdir(dir_or_prefix):
            yield self.metadata(dir_or_prefix)
            return
        for root, _, files in tf.io.gfile.walk(dir_or_prefix):
            for name in files:
                yield self.metadata(self.join(root, name))

    def _open(self, path, mode, compression_type):
        compression_type = FileSystem._get_compression_type(path, compression_type)
        if "w" in mode:
            parent = self.split(path)[0]
            if parent:
                tf.io.gfile.makedirs(parent)
        raw = _GFileChannel(path, mode)
        if compression_type == CompressionTypes.UNCOMPRESSED:
            return raw
        return CompressedFile(raw, compression_type=compression_type)

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        return self._open(path, "wb", compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        return self._open(path, "rb", compression_type)

    def copy(self, source_file_names, destination_file_names):
        errors = {}
        for src, dst in zip(source_file_names, destination_file_names):
            try:
                self._open(dst, "wb", CompressionTypes.UNCOMPRESSED).close()
                tf.io.gfile.copy(src, dst, overwrite=True)
            except Exception as e:  # noqa: BLE001
                errors[(src, dst)] = e
        if errors:
            raise BeamIOError("Copy operation failed", errors)

    def rename(self, source_file_names, destination_file_names):
        errors = {}
        for src, dst in zip(source_file_names, destination_file_names):
            try:
                if tf.io.gfile.isdir(src):
                    raise OSError(f"ram:// has no directory rename: {src}")
                self._open(dst, "wb", CompressionTypes.UNCOMPRESSED).close()
                tf.io.gfile.rename(src, dst, overwrite=True)
            except Exception as e:  # noqa: BLE001
                errors[(src, dst)] = e
        if errors:
            raise BeamIOError("Rename operation failed", errors)

    def exists(self, path):
        return tf.io.gfile.exists(path)

    def size(self, path):
        return tf.io.gfile.stat(path).length

    def last_updated(self, path):
        return tf.io.gfile.stat(path).mtime_nsec / 1e9

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        try:
            st = tf.io.gfile.stat(path)
        except tf.errors.NotFoundError as e:
            raise BeamIOError("Metadata operation failed", {path: e}) from None
        return FileMetadata(path, st.length, st.mtime_nsec / 1e9)

    def delete(self, paths):
        errors = {}
        for path in paths:
            try:
                if tf.io.gfile.isdir(path):
                    tf.io.gfile.rmtree(path)
                else:
                    tf.io.gfile.remove(path)
            except Exception as e:  # noqa: BLE001
                errors[path] = e
        if errors:
            raise BeamIOError("Delete operation failed", errors)


class _GFileChannel(io.RawIOBase):
    """A ``tf.io.gfile.GFile`` as the raw binary channel Beam's sinks and sources expect."""

    def __init__(self, path, mode):
        self._f = tf.io.gfile.GFile(path, mode)
        self._mode = mode
        self.mode = mode  # CompressedFile reads it
        self._written = 0  # ram:// files opened for writing have no Tell()
        if "w" in mode:
            self._f.write(b"")  # GFile creates the file at its first write: an empty shard must exist too

    def readable(self):
        return "r" in self._mode

    def writable(self):
        return "w" in self._mode

    def seekable(self):
        return "r" in self._mode

    def readinto(self, b):
        data = self._f.read(len(b))
        b[:len(data)] = data
        return len(data)

    def write(self, b):
        self._f.write(bytes(b))
        self._written += len(b)
        return len(b)

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_END:
            offset = self._f.size() + offset
        elif whence == io.SEEK_CUR:
            offset = self._f.tell() + offset
        self._f.seek(offset)
        return offset

    def tell(self):
        return self._written if "w" in self._mode else self._f.tell()

    def close(self):
        if not self.closed:
            self._f.close()
        super().close()


@contextlib.contextmanager
def directory_renames_copy():
    """Within: ``tf.io.gfile.rename`` of a ``ram://`` directory copies its files and deletes
    the source (what TF's GCS filesystem does for a directory). Yields the list of
    (source, destination) directory renames it served."""
    real = tf.io.gfile.rename
    served = []

    def rename(src, dst, overwrite=False):
        if str(src).startswith(f"{SCHEME}://") and tf.io.gfile.isdir(src):
            served.append((src, dst))
            for root, _, files in tf.io.gfile.walk(src):
                rel = root[len(src):].lstrip("/")
                target = "/".join(p for p in (dst.rstrip("/"), rel) if p)
                tf.io.gfile.makedirs(target)
                for name in files:
                    tf.io.gfile.copy(f"{root}/{name}", f"{target}/{name}", overwrite=True)
            tf.io.gfile.rmtree(src)
            return
        real(src, dst, overwrite)

    tf.io.gfile.rename = rename
    try:
        yield served
    finally:
        tf.io.gfile.rename = real
