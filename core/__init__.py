"""The kernel every layer shares: errors, typed config, the feature schema and its ``tf.io``
contract, raw-record formats and checks, the split rule, the run directory and atomic writes,
report figures and the registries that plug implementations in.

Imports run one way: ``core`` -> ``models`` -> ``serving`` -> ``pipeline`` (``.importlinter``
holds the contract; ``.ci/run`` checks it). ``core`` imports none of the three.

This is the one place that selects Keras 2: TFRS and TF Transform's Keras layer need it, so
``TF_USE_LEGACY_KERAS=1`` is set here, before any ``tf.keras`` is touched. Every package of
the project imports ``core`` first (it is their bottom layer), so nothing else sets it.
Importing this package loads no TensorFlow.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
