"""Keras layers, models, tasks and losses of the multi-task ranker (layer 2: imports ``core`` only)."""
import core  # noqa: F401  (the kernel below: selects Keras 2 before TensorFlow, see core/__init__.py)
