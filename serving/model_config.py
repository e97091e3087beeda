"""TF Serving's ``--model_config_file``: a ``ModelServerConfig`` text proto naming the models.

``read_model_config(path)`` parses the file (``tensorflow_serving.config.model_server_config_pb2``
with ``google.protobuf.text_format``) into ``ModelConfig``s, with the checks of TF Serving's
``server_core.cc``; a bad file is one ``ConfigError`` naming the file and the problem::

    model_config_list {
      config {
        name: "ranker"
        base_path: "/models/ranker"          # absolute, holding <version>/ directories
        model_platform: "tensorflow"          # the only platform served here
        model_version_policy { specific { versions: 1 versions: 2 } }
        version_labels { key: "stable" value: 1 }
        version_labels { key: "canary" value: 2 }
      }
    }

Version policies (``file_system_storage_path_source.cc``): ``latest { num_versions: N }``
(the N highest versions on disk, N < 1 counts as 1; the default when no policy is set),
``all {}`` (every version on disk), ``specific { versions: ... }`` (those of the listed
versions that are on disk; none listed serves nothing, with a warning). ``aspired`` applies
the policy to the versions found on disk.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from core import fs
from core.errors import ConfigError
from serving.status import FAILED_PRECONDITION, INVALID_ARGUMENT

log = logging.getLogger("serving.model_config")

TENSORFLOW_PLATFORM = "tensorflow"
LATEST, ALL, SPECIFIC = "latest", "all", "specific"


class ModelConfigError(ConfigError):
    """A models.config (or a HandleReloadConfigRequest's config) TF Serving would refuse;
    ``status`` is the canonical code it reports it with (``serving.status``)."""

    def __init__(self, message: str, status: str = INVALID_ARGUMENT):
        super().__init__(message)
        self.status = status


def label_refused(version: int, name: str) -> ModelConfigError:
    """TF Serving's UpdateModelVersionLabelMap refusal (FAILED_PRECONDITION)."""
    return ModelConfigError(f"Request to assign label to version {version} of model {name}, which is not currently "
                            "available for inference", FAILED_PRECONDITION)


@dataclass(frozen=True)
class ModelConfig:
    """One served model: where its versions are, which to serve, and their labels.

    Attributes:
      name: the model name of requests (``model_spec.name``, ``/v1/models/<name>``).
      base_path: the directory holding ``<version>/`` SavedModels.
      policy: ``latest``, ``all`` or ``specific``.
      num_versions: how many of the highest versions ``latest`` serves (>= 1).
      versions: the versions ``specific`` serves.
      labels: version label -> version (``version_labels``).
    """

    name: str
    base_path: str
    policy: str = LATEST
    num_versions: int = 1
    versions: tuple = ()
    labels: dict = field(default_factory=dict)

    def aspired(self, on_disk) -> list[int]:
        """The versions the policy serves among ``on_disk`` (integers), ascending."""
        found = sorted(set(on_disk))
        if self.policy == ALL:
            return found
        if self.policy == SPECIFIC:
            return [v for v in found if v in self.versions]
        return found[-max(self.num_versions, 1):] if found else []


def parse_model_config(text: str, source: str = "model config") -> list[ModelConfig] | None:
    """``ModelConfig``s of a ``ModelServerConfig`` text proto (None for an empty config, see
    ``models_from_proto``); ``ModelConfigError`` (its message starting with ``source``) when
    it does not parse or breaks a rule of ``models_from_proto``."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ModelConfigError(f"{source}: not a ModelServerConfig text proto: {e}") from None
    try:
        return models_from_proto(config)
    except ModelConfigError as e:
        raise ModelConfigError(f"{source}: {e}", e.status) from None


def models_from_proto(config) -> list[ModelConfig] | None:
    """``ModelConfig``s of a ``ModelServerConfig`` proto, with TF Serving's checks (unique
    names, absolute base paths, the ``tensorflow`` platform). An empty config (no
    ``model_config_list`` at all, e.g. an empty file) is None: TF Serving's ReloadConfig takes
    no action on it (the models served stay; at startup nothing is served), whereas an empty
    ``model_config_list {}`` is the empty list (every model unloaded)."""
    kind = config.WhichOneof("config")
    if kind is None:
        return None
    if kind != "model_config_list":
        raise ModelConfigError("ServerModelConfig type not supported. Only ModelConfigList is currently supported")
    out, names = [], set()
    for c in config.model_config_list.config:
        if not c.name:
            raise ModelConfigError("a config has no name")
        if c.name in names:
            raise ModelConfigError(f"Illegal to list model {c.name} multiple times in config list")
        names.add(c.name)
        if not c.base_path or not (os.path.isabs(c.base_path) or not fs.is_local(c.base_path)):
            raise ModelConfigError(f"Expected model {c.name} to have an absolute path or URI; got "
                                   f"base_path()={c.base_path}")
        if c.model_type:
            raise ModelConfigError(f"model {c.name}: the deprecated model_type is not supported; set "
                                   f"model_platform: \"{TENSORFLOW_PLATFORM}\"")
        if not c.model_platform:
            raise ModelConfigError("Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                                   f"ModelServerConfig::model_platform, model name is {c.name}")
        if c.model_platform != TENSORFLOW_PLATFORM:
            raise ModelConfigError(f"Model {c.name} requests unsupported platform {c.model_platform}")
        out.append(_model_config(c))
    return out


def _model_config(c) -> ModelConfig:
    policy = c.model_version_policy.WhichOneof("policy_choice") or LATEST
    versions = tuple(c.model_version_policy.specific.versions)
    if policy == SPECIFIC and not versions:
        log.warning("No specific versions requested for servable %s.", c.name)
    if c.HasField("logging_config"):
        log.warning("model %s: logging_config (request logging) is not implemented by this server; "
                    "requests are not logged", c.name)
    return ModelConfig(name=c.name, base_path=os.path.normpath(c.base_path) if fs.is_local(c.base_path) else fs.absolute(c.base_path),
                       policy=policy,
                       num_versions=max(int(c.model_version_policy.latest.num_versions), 1),
                       versions=versions, labels=dict(c.version_labels))


def read_model_config(path: str) -> list[ModelConfig] | None:
    """``parse_model_config`` of the file ``path`` (None: an empty config); ConfigError when
    it cannot be read."""
    try:
        text = fs.read_text(path)
    except Exception as e:  # noqa: BLE001  OSError, tf.errors.NotFoundError, UnicodeDecodeError
        raise ModelConfigError(f"--model_config_file: cannot read {path}: {e}") from None
    return parse_model_config(text, f"--model_config_file {path}")


def discovered(base_dir: str) -> list[ModelConfig]:
    """Without a config file: every ``<base_dir>/<name>/`` directory (hidden ones skipped) is
    a model served with the latest-version policy."""
    return [ModelConfig(n, fs.join(base_dir, n)) for n in fs.listdir(base_dir)
            if not n.startswith(".") and fs.isdir(fs.join(base_dir, n))]
