"""Keras models, layers, tasks and losses of the multi-task ranker.

This package is the one place that selects Keras 2: TFRS and TF Transform's Keras layer
need it, so ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first imported.
``pipeline`` and ``serving`` import this package first; importing it loads no TensorFlow.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
