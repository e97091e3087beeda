"""Packaging for Beam workers: ``--beam-arg=--setup_file=./setup.py`` ships ``core``,
``models``, ``serving`` and ``pipeline`` to Dataflow/Flink/Spark workers. Dependencies come from
requirements.txt (``--beam-arg=--requirements_file=requirements.txt``) or a worker image."""
import setuptools

setuptools.setup(
    name="multitask-ranking-pipeline",
    version="0.1.0",
    packages=setuptools.find_packages(include=["core", "core.*", "models", "models.*", "serving", "serving.*", "pipeline", "pipeline.*"]),
    package_data={"serving": ["tfserving/*"]},
    python_requires=">=3.11",
)
