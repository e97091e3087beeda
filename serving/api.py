"""The server's operations, shared by the REST and gRPC front ends.

``ServingApi`` resolves a model and version through the ``ModelStore`` and runs Predict,
Classify and Regress on numpy inputs, with TF Serving's checks: the batch-size limit, the
classify/regress method names, and TensorFlow's own argument errors turned into
``RequestError`` (400) instead of escaping as 500s. The front ends only translate wire
formats (JSON or protos) to and from these calls.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from serving.signatures import CLASSIFY_METHOD, REGRESS_METHOD
from serving.status import RequestError, invalid

DEFAULT_SIGNATURE = "serving_default"


def _tf_message(message: str) -> str:
    """The informative lines of a TensorFlow error (no 'Graph execution error:' or node lists)."""
    lines = [ln.strip() for ln in message.splitlines()]
    keep = [ln for ln in lines if ln and ln != "Graph execution error:" and not ln.startswith("[[")]
    return " ".join(keep) or message


class ServingApi:
    """Predict / Classify / Regress / metadata / status over a ``ModelStore``.

    Args:
      store: the ``ModelStore`` serving the models.
      max_batch_size: largest batch (first dimension) a request may carry; larger is a 400.
    """

    def __init__(self, store, max_batch_size: int = 1024):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1. Received: max_batch_size={max_batch_size}")
        self.store = store
        self.max_batch_size = max_batch_size

    def _check_batch(self, n: int) -> None:
        if n > self.max_batch_size:
            raise invalid(f"Task size {n} is larger than maximum input batch size {self.max_batch_size}")

    def _run(self, model, signature: str, inputs: dict, output_filter=None) -> dict:
        try:
            return model.run(signature, inputs, output_filter)
        except RequestError:
            raise
        except tf.errors.InvalidArgumentError as e:
            raise invalid(_tf_message(e.message)) from None

    def predict(self, name: str, version: int | None, signature: str, inputs, output_filter=None):
        """Returns ``(version, signature, outputs)`` with outputs as numpy arrays.

        ``inputs`` is a dict of input key -> array-like, or a function of the resolved
        ``Signature`` returning one (the REST front end needs the signature's input keys to
        read row-format instances; resolving both under one ``acquire`` keeps a version swap
        between the two from failing the request).
        """
        signature = signature or DEFAULT_SIGNATURE
        with self.store.acquire(name, version) as (v, model):
            sig = model.signature(signature)
            feed = inputs(sig) if callable(inputs) else inputs
            for value in feed.values():
                self._check_batch(len(value) if np.ndim(value) else 1)
            return v, signature, self._run(model, signature, feed, output_filter)

    def _method(self, model, signature: str, method: str, api: str) -> None:
        sig = model.signature(signature)
        if sig.method_name != method:
            raise invalid(f"Expected {api} signature method_name to be {method}. Was: {sig.method_name} "
                          f"(signature \"{signature}\")")

    def _run_examples(self, name, version, signature, examples, method: str, api: str):
        """Runs a Classify/Regress-style signature (``inputs``: serialized examples); returns
        ``(version, signature, outputs)``."""
        signature = signature or DEFAULT_SIGNATURE
        self._check_batch(len(examples))
        with self.store.acquire(name, version) as (v, model):
            self._method(model, signature, method, api)
            return v, signature, self._run(model, signature, {"inputs": list(examples)})

    def classify(self, name: str, version: int | None, signature: str, examples: list[bytes]):
        """Returns ``(version, signature, scores [n, k], classes [n, k])``."""
        v, signature, out = self._run_examples(name, version, signature, examples, CLASSIFY_METHOD, "classification")
        return v, signature, out["scores"], out["classes"]

    def regress(self, name: str, version: int | None, signature: str, examples: list[bytes]):
        """Returns ``(version, signature, values [n])``."""
        v, signature, out = self._run_examples(name, version, signature, examples, REGRESS_METHOD, "regression")
        return v, signature, np.reshape(out["outputs"], [-1])

    def metadata(self, name: str, version: int | None):
        """Returns ``(version, {signature name: SignatureDef proto})``."""
        with self.store.acquire(name, version) as (v, model):
            return v, dict(model.signature_defs)

    def status(self, name: str, version: int | None = None) -> list[dict]:
        return self.store.status(name, version)
