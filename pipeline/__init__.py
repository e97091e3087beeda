"""The top layer: the ``python -m pipeline`` command line, stage glue and the Beam jobs
(preprocessing with TF Transform, teacher scoring, batch predictions) over ``core``,
``models`` and ``serving``."""
import core  # noqa: F401  (the kernel below: selects Keras 2 before TensorFlow, see core/__init__.py)
