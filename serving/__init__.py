"""Export, validation gate, the TF-Serving-compatible server and clients (layer 3: imports ``core`` and ``models``)."""
import core  # noqa: F401  (the kernel below: selects Keras 2 before TensorFlow, see core/__init__.py)
