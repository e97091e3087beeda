"""The project's exception hierarchy.

The CLI catches ``PipelineError`` once, prints ``error: <message>`` and exits with the
subclass's ``exit_code``; tracebacks are shown only with ``--debug``.
"""


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
