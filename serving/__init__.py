"""Export, validation gate, TF-Serving-compatible server, clients and batch inference."""
import models  # noqa: F401  (selects Keras 2 before any TensorFlow import)
