"""The project's exception hierarchy.

The CLI catches ``PipelineError`` once, prints ``error: <message>`` and exits with the
subclass's ``exit_code``; tracebacks are shown only with ``--debug``. An ``OSError`` (disk
full, permissions, I/O) escaping a stage becomes a ``StorageError`` (``storage_error``).

Exit codes: 1 other pipeline errors, 2 usage/config/input (incl. a stale input whose stage
must be re-run), 3 data validation, 4 export, 5 gate, 6 serving, 7 storage (disk full, I/O).
"""
import errno as _errno


class PipelineError(Exception):
    """Base class of every error the pipeline reports to its user."""

    exit_code = 1


class ConfigError(PipelineError):
    """A configuration file, ``--set`` override or command-line value is invalid."""

    exit_code = 2


class InputError(PipelineError):
    """An input file or run-directory artifact is missing, unreadable or malformed."""

    exit_code = 2


class DataValidationError(PipelineError):
    """Too many input records failed validation (see the dead-letter output)."""

    exit_code = 3


class ExportError(PipelineError):
    """A model could not be exported as a SavedModel."""

    exit_code = 4


class GateFailedError(PipelineError):
    """A candidate model failed the validation gate; nothing was published."""

    exit_code = 5


class ServingError(PipelineError):
    """The model server could not start or load a model."""

    exit_code = 6


class StorageError(PipelineError):
    """Writing or reading an artifact failed at the OS level (disk full, quota, permissions,
    read-only filesystem, I/O error). Nothing half-written is published: outputs are committed
    by a marker written last (``core.fs.publish_dir``), and the stage is recorded as failed."""

    exit_code = 7


# Messages of errors that are an OSError underneath but reach us wrapped (TensorFlow's
# OpError, a Beam worker's RuntimeError) with only the strerror text left.
_WRAPPED_STRERRORS = {_errno.ENOSPC: "No space left on device", _errno.EDQUOT: "Disk quota exceeded",
                      _errno.EROFS: "Read-only file system"}


def find_os_error(error: BaseException):
    """The ``OSError`` behind ``error`` (itself or its ``raise ... from`` chain), else an
    ``OSError`` rebuilt from a wrapped "No space left on device"-style message, else None."""
    seen, e = set(), error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError):
            return e
        e = e.__cause__
    text = str(error)
    for code, strerror in _WRAPPED_STRERRORS.items():
        if strerror in text:
            return OSError(code, strerror)
    return None


def storage_error(os_error: OSError, stage: str = "", run_dir: str = "") -> PipelineError:
    """The one-line error for ``os_error``: ``InputError`` for a missing file, else ``StorageError``.

    ``<stage>: No space left on device (ENOSPC): <file>; ...; re-run `python -m pipeline <stage>```."""
    code = getattr(os_error, "errno", None)
    strerror = getattr(os_error, "strerror", None) or str(os_error) or type(os_error).__name__
    name = _errno.errorcode.get(code) if isinstance(code, int) else None
    where = os_error.filename if getattr(os_error, "filename", None) is not None else None
    text = f"{strerror} ({name})" if name else strerror
    if where is not None:
        text += f": {where}"
        if getattr(os_error, "filename2", None) is not None:
            text += f" -> {os_error.filename2}"
    prefix = f"{stage}: " if stage else ""
    rerun = f"python -m pipeline {stage}" + (f" --run-dir {run_dir}" if run_dir else "") if stage else ""
    if isinstance(os_error, (FileNotFoundError, NotADirectoryError)):
        return InputError(prefix + text + (f"; re-run `{rerun}` once the input exists" if rerun else ""))
    hint = {_errno.ENOSPC: "free disk space", _errno.EDQUOT: "free space within your quota",
            _errno.EACCES: "fix the permissions", _errno.EPERM: "fix the permissions",
            _errno.EROFS: "use a writable run directory"}.get(code, "fix the cause")
    tail = ("; nothing half-written was published (atomic writes) and later stages refuse this stage's "
            "output until it succeeds" if stage else "")
    return StorageError(prefix + text + tail + (f"; {hint}, then re-run `{rerun}`" if rerun else f"; {hint}"))
