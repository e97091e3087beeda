"""Preprocessing stages, orchestration and the ``python -m pipeline`` command line."""
import models  # noqa: F401  (selects Keras 2 before any TensorFlow import)
