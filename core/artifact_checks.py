"""Checks that turn a broken run-directory artifact into one ``InputError`` naming the file.

TensorFlow reports a truncated TFRecord shard, a deleted vocabulary or an empty model
directory deep inside a graph function, as a traceback that rarely names the file. The
stages call these checks where they open such artifacts (before, or when the TensorFlow
error surfaces), so the CLI prints one line: ``error: <file>: <what is wrong>``.

Example::

    from core import artifact_checks
    artifact_checks.require_saved_model(path, "train")
    artifact_checks.require_transform_output(run_dir.transform_output_dir)
"""
from __future__ import annotations

import json
from typing import Iterable, Optional

from core import fs
from core.errors import InputError

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def require_saved_model(path: str, stage: str) -> str:
    """Raises ``InputError`` unless ``path`` is a directory holding a SavedModel."""
    if not fs.isdir(path):
        raise InputError(f"{path}: model directory not found; run `python -m pipeline {stage}` first")
    if not any(fs.isfile(fs.join(path, f)) for f in SAVED_MODEL_FILES):
        raise InputError(f"{path}: no SavedModel in this model directory (saved_model.pb missing; "
                         f"found {fs.listdir(path)}); re-run `python -m pipeline {stage}`")
    if not fs.isdir(fs.join(path, "variables")):
        raise InputError(f"{fs.join(path, 'variables')}: SavedModel variables missing; "
                         f"re-run `python -m pipeline {stage}`")
    return path


def require_transform_output(transform_dir: str) -> str:
    """Raises ``InputError`` naming the first missing file of a ``tft.TFTransformOutput`` dir:
    the transform graph, the transformed metadata, or a vocabulary listed in its asset map."""
    fn_dir = fs.join(transform_dir, "transform_fn")
    require_saved_model(fn_dir, "preprocess")
    meta_dir = fs.join(transform_dir, "transformed_metadata")
    schema = fs.join(meta_dir, "schema.pbtxt")
    if not fs.isfile(schema):
        raise InputError(f"{schema}: transformed metadata missing; re-run `python -m pipeline preprocess`")
    asset_map = fs.join(meta_dir, "asset_map")
    if fs.isfile(asset_map):
        try:
            assets = json.loads(fs.read_text(asset_map))
        except Exception as e:  # noqa: BLE001  unreadable or not JSON
            raise InputError(f"{asset_map}: unreadable asset map ({e})") from None
        for name in sorted(set(assets.values()) if isinstance(assets, dict) else []):
            vocab = fs.join(fn_dir, "assets", name)
            if not fs.isfile(vocab):
                raise InputError(f"{vocab}: vocabulary file missing from the transform output; "
                                 "re-run `python -m pipeline preprocess`")
    return transform_dir


def find_corrupt_shard(files: Iterable[str], compression: str = "GZIP") -> Optional[tuple[str, str]]:
    """(file, TensorFlow's message) of the first shard that cannot be read to the end, else None."""
    import tensorflow as tf

    for path in files:
        try:
            for _ in tf.data.TFRecordDataset(path, compression_type=compression):
                pass
        except tf.errors.OpError as e:
            return path, (e.message or type(e).__name__).strip().splitlines()[0]
    return None


def shard_error(patterns: Iterable[str], error: Exception) -> Exception:
    """The ``InputError`` naming the corrupt shard among ``patterns`` behind a TensorFlow read
    ``error``; the original error when every shard reads cleanly (a different problem)."""
    files = [f for p in patterns for f in fs.glob(p)]
    found = find_corrupt_shard(files)
    if found is None:
        return error
    path, message = found
    return InputError(f"{path}: corrupt or truncated TFRecord shard ({message}); "
                      "re-run the stage that wrote it (e.g. `python -m pipeline preprocess`)")
