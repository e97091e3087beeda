"""Server-side request batching: TF Serving's ``--enable_batching`` (``BatchingSession`` over a
``SharedBatchScheduler`` queue, 2.19), for a loaded model with ``SessionModel``'s interface.

``read_batching_parameters(path)`` reads a ``--batching_parameters_file``: a
``BatchingParameters`` text proto (``session_bundle_config.proto``)::

    max_batch_size { value: 1024 }        # largest batch (default 1000)
    batch_timeout_micros { value: 2000 }  # longest wait to fill one (default 0)
    max_enqueued_batches { value: 64 }    # queue length, in batches (default 10)
    num_batch_threads { value: 2 }        # threads running batches (default: the CPUs)
    allowed_batch_sizes: 64 allowed_batch_sizes: 1024   # pad batches up to one of these
    pad_variable_length_inputs: false     # pad inputs of other widths (with their first value)
    enable_large_batch_splitting { value: true }        # split a task across batches
    max_execution_batch_size { value: 256 }             # with splitting: the batch size run

``BatchingModel(model, params)`` wraps a loaded model (``run(signature_name, inputs,
output_filter=None)``, ``signature(name)``, ``signatures``, ``signature_defs``, ``close()``).
Concurrent ``run`` calls of one signature (the same inputs and outputs: TF Serving's
``TensorSignature``) are queued as tasks; a batch is run once it holds ``max_batch_size``
rows (``max_execution_batch_size`` with splitting), once its first task has waited
``batch_timeout_micros``, or at once when a later batch is already waiting; its tasks'
inputs are concatenated along the first dimension (padded to the smallest
``allowed_batch_sizes`` entry that holds them, with copies of the last task's first row),
run in one call of the wrapped model, and the outputs split back by task. As in TF Serving:

* a task larger than ``max_batch_size`` is INVALID_ARGUMENT ``Task size N is larger than
  maximum input batch size M``; with ``enable_large_batch_splitting`` a task up to
  ``max_batch_size`` is split into pieces that fill the open batch and then batches of
  ``max_execution_batch_size``, and its outputs are put back together;
* a task that would open a batch beyond ``max_enqueued_batches`` is UNAVAILABLE ``The
  batch scheduling queue to which this task was submitted is full...``;
* inputs without a first dimension, or with different first dimensions, are INVALID_ARGUMENT
  (``Batching Run() input tensors must have ...``);
* a batch whose tasks have inputs of different shapes beyond the first dimension fails
  every task in it with FAILED_PRECONDITION (``... padding is turned off ...``) unless
  ``pad_variable_length_inputs``; an error of the batched run (or an output without the
  batch's first dimension, FAILED_PRECONDITION) goes to every task of the batch.

A request the wrapped model would refuse before batching (unknown or missing inputs, a
value it cannot convert to the input's dtype, a wrong rank), and an empty batch, is run by
the wrapped model directly (its own error), as TF Serving validates a request before its
session runs.
"""
from __future__ import annotations

import collections
import copy
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from core import fs
from core.errors import ConfigError
from serving.status import RequestError, failed_precondition, invalid
from serving.status import UNAVAILABLE

DEFAULT_MAX_BATCH_SIZE = 1000  # SharedBatchScheduler::QueueOptions::input_batch_size_limit
DEFAULT_MAX_ENQUEUED_BATCHES = 10
MAX_PADDED_RANK = 6  # batching_util.cc: PadOp's ranks


def _batching_parameters_class():
    """The ``BatchingParameters`` message class: tensorflow-serving-api's when it ships
    ``session_bundle_config_pb2``, else built from the message's fields (2.19's proto)."""
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2

        return session_bundle_config_pb2.BatchingParameters
    except ImportError:
        pass
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(name="serving/batching_parameters.proto", package="tensorflow.serving",
                                               syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    message = proto.message_type.add(name="BatchingParameters")
    F = descriptor_pb2.FieldDescriptorProto
    for name, number, wrapper in (("max_batch_size", 1, "Int64Value"), ("batch_timeout_micros", 2, "Int64Value"),
                                  ("max_enqueued_batches", 3, "Int64Value"), ("num_batch_threads", 4, "Int64Value"),
                                  ("thread_pool_name", 5, "StringValue"),
                                  ("enable_large_batch_splitting", 8, "BoolValue"),
                                  ("max_execution_batch_size", 9, "Int64Value")):
        message.field.add(name=name, number=number, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                          type_name=f".google.protobuf.{wrapper}")
    message.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


BatchingParameters = _batching_parameters_class()


@dataclass(frozen=True)
class BatchingOptions:
    """The queue and session options of a ``BatchingParameters``, defaults filled in."""

    max_batch_size: int
    batch_timeout_micros: int
    max_enqueued_batches: int
    num_batch_threads: int
    allowed_batch_sizes: tuple
    pad_variable_length_inputs: bool
    enable_large_batch_splitting: bool
    max_execution_batch_size: int

    @classmethod
    def from_parameters(cls, params) -> "BatchingOptions":
        """Options of a ``BatchingParameters`` message; ValueError with TF Serving's message
        for a value it refuses (bundle_factory_util.cc, batching_session.cc,
        shared_batch_scheduler.h)."""
        def value(field, default):
            return getattr(params, field).value if params.HasField(field) else default

        max_batch = value("max_batch_size", DEFAULT_MAX_BATCH_SIZE)
        splitting = value("enable_large_batch_splitting", False)
        options = cls(
            max_batch_size=max_batch, batch_timeout_micros=value("batch_timeout_micros", 0),
            max_enqueued_batches=value("max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES),
            num_batch_threads=value("num_batch_threads", os.cpu_count() or 1),
            allowed_batch_sizes=tuple(params.allowed_batch_sizes),
            pad_variable_length_inputs=params.pad_variable_length_inputs, enable_large_batch_splitting=splitting,
            max_execution_batch_size=value("max_execution_batch_size", max_batch) if splitting else max_batch)
        options._check()
        return options

    def _check(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads", "max_execution_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive; was {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be non-negative; was {self.batch_timeout_micros}")
        if self.enable_large_batch_splitting and self.max_execution_batch_size > self.max_batch_size:
            raise ValueError(f"max_execution_batch_size ({self.max_execution_batch_size}) must be at most "
                             f"max_batch_size ({self.max_batch_size})")
        sizes = self.allowed_batch_sizes
        if not sizes:
            return
        if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
            raise ValueError("allowed_batch_sizes entries must be monotonically increasing")
        if self.enable_large_batch_splitting:
            if sizes[-1] != self.max_execution_batch_size:
                raise ValueError(f"Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; last "
                                 f"entry was {sizes[-1]}; expected {self.max_execution_batch_size}")
        elif sizes[-1] != self.max_batch_size:
            raise ValueError(f"Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                             f"{sizes[-1]}; expected {self.max_batch_size}")


def read_batching_parameters(path: str):
    """The ``BatchingParameters`` of a text-proto file; ``ConfigError`` naming the file and
    the problem for an unreadable file, a parse error or a value TF Serving refuses."""
    from google.protobuf import text_format

    try:
        text = fs.read_text(path)
    except Exception as e:  # noqa: BLE001  OSError, tf.errors.NotFoundError, UnicodeDecodeError
        raise ConfigError(f"batching parameters file {path}: cannot read it: {getattr(e, 'strerror', None) or getattr(e, 'message', None) or e}") from None
    params = BatchingParameters()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as e:
        raise ConfigError(f"batching parameters file {path}: not a BatchingParameters text proto: {e}") from None
    try:
        BatchingOptions.from_parameters(params)
    except ValueError as e:
        raise ConfigError(f"batching parameters file {path}: {e}") from None
    return params


class _Task:
    """One ``run`` (or one piece of a split one): its inputs, and its result when done."""

    __slots__ = ("inputs", "size", "done", "outputs", "error", "parent")

    def __init__(self, inputs: dict, size: int, parent=None):
        self.inputs, self.size, self.parent = inputs, size, parent
        self.done = threading.Event() if parent is None else None
        self.outputs = self.error = None

    def finish(self, outputs=None, error=None) -> None:
        self.outputs, self.error = outputs, error
        if self.parent is not None:
            self.parent.piece_done()
        else:
            self.done.set()


class _SplitTask(_Task):
    """A task split across batches: done when every piece is; outputs concatenated."""

    __slots__ = ("pieces", "_left", "_lock")

    def __init__(self, inputs: dict, size: int):
        super().__init__(inputs, size)
        self.pieces: list = []
        self._left = 0
        self._lock = threading.Lock()

    def piece_done(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left:
                return
        errors = [p.error for p in self.pieces if p.error is not None]
        if errors:
            self.finish(error=errors[0])
        else:
            keys = self.pieces[0].outputs.keys()
            self.finish({k: np.concatenate([p.outputs[k] for p in self.pieces]) for k in keys})


class _Queue:
    """The batches of one signature: closed ones first, the open one last."""

    def __init__(self, key: tuple):
        self.key = key  # (signature name, input keys, output filter)
        self.batches: collections.deque = collections.deque([[]])
        self.sizes: collections.deque = collections.deque([0])
        self.open_since = 0.0  # when the open batch got its first task


class BatchingModel:
    """A loaded model whose ``run`` calls are batched across concurrent requests (module
    docstring). ``params``: a ``BatchingParameters`` message (``read_batching_parameters``)."""

    def __init__(self, model, params):
        self.model = model
        self.options = BatchingOptions.from_parameters(params)
        self.batches_run = 0  # batched model calls so far
        self._cond = threading.Condition()
        self._queues: dict = {}
        self._closing = False
        self._busy = 0  # batches being run
        self._threads = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
                         for i in range(self.options.num_batch_threads)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ the model interface
    @property
    def signatures(self) -> dict:
        return self.model.signatures

    @property
    def signature_defs(self) -> dict:
        return self.model.signature_defs

    @property
    def export_dir(self) -> str:
        return getattr(self.model, "export_dir", "")

    def signature(self, name: str):
        return self.model.signature(name)

    def run(self, signature_name: str, inputs: dict, output_filter=None) -> dict:
        """The wrapped model's ``run``, batched with the concurrent calls of the same signature."""
        sig = self.model.signature(signature_name)
        arrays = self._arrays(sig, inputs)
        if arrays is None:
            return self.model.run(signature_name, inputs, output_filter)
        size = _batch_size(arrays)
        if size == 0:
            return self.model.run(signature_name, inputs, output_filter)
        outputs = tuple(output_filter) if output_filter else None
        key = (signature_name or "serving_default", tuple(sorted(arrays)), outputs)
        task = self._schedule(key, arrays, size)
        task.done.wait()
        if task.error is not None:
            raise _own_copy(task.error)
        return task.outputs

    def close(self) -> None:
        """Runs what is queued, stops the batch threads, then closes the wrapped model."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()
        self.model.close()

    # ------------------------------------------------------------------ tasks
    @staticmethod
    def _arrays(sig, inputs: dict):
        """Input key -> ndarray of the input's dtype, or None when the wrapped model should
        see the request itself (keys that are not the signature's, a value of another type
        or rank)."""
        if set(inputs) != set(sig.inputs):
            return None
        out = {}
        for key, info in sig.inputs.items():
            value = inputs[key]
            try:
                if info.dtype.is_numpy_compatible and info.dtype.name != "string":
                    arr = np.asarray(value)
                    if arr.dtype.kind not in "iufb" or (arr.dtype.kind == "b") != (info.dtype.name == "bool") or (
                            arr.dtype.kind == "f" and not info.dtype.is_floating):
                        return None
                    arr = arr.astype(info.dtype.as_numpy_dtype, copy=False)
                else:
                    arr = np.asarray(value, dtype=object)
            except (TypeError, ValueError, OverflowError):
                return None
            if info.shape is not None and arr.ndim != len(info.shape):
                return None
            out[key] = arr
        return out

    def _schedule(self, key: tuple, arrays: dict, size: int) -> _Task:
        o = self.options
        if size > o.max_batch_size:
            raise invalid(f"Task size {size} is larger than maximum input batch size {o.max_batch_size}")
        with self._cond:
            if self._closing:
                raise RequestError(UNAVAILABLE, "The batch scheduling queue is closed (the model is being unloaded)")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(key)
            if o.enable_large_batch_splitting:
                task = self._add_split(queue, arrays, size)
            else:
                task = _Task(arrays, size)
                if queue.sizes[-1] + size > o.max_batch_size:
                    if len(queue.batches) >= o.max_enqueued_batches:
                        raise RequestError(UNAVAILABLE, "The batch scheduling queue to which this task was submitted "
                                                        f"is full; currently {len(queue.batches)} batches enqueued "
                                                        f"and max_enqueued_batches is {o.max_enqueued_batches}")
                    self._new_batch(queue)
                self._add(queue, task)
            self._cond.notify_all()
        return task

    def _add(self, queue: _Queue, task: _Task) -> None:
        if not queue.batches[-1]:
            queue.open_since = time.monotonic()
        queue.batches[-1].append(task)
        queue.sizes[-1] += task.size

    @staticmethod
    def _new_batch(queue: _Queue) -> None:
        queue.batches.append([])
        queue.sizes.append(0)

    def _add_split(self, queue: _Queue, arrays: dict, size: int) -> _Task:
        """Splitting: the pieces fill the open batch, then batches of max_execution_batch_size."""
        o = self.options
        limit = o.max_execution_batch_size
        open_room = limit - queue.sizes[-1]
        capacity = (o.max_enqueued_batches - len(queue.batches)) * limit + open_room
        if size > capacity:
            raise RequestError(UNAVAILABLE, f"The batch scheduling queue to which this task was submitted is full; "
                                            f"task size is {size} but scheduling capacity is only {capacity} "
                                            f"(num_enqueued_batches={len(queue.batches)}, max_enqueued_batches="
                                            f"{o.max_enqueued_batches}, open_batch_size={queue.sizes[-1]}, "
                                            f"max_execution_batch_size={limit})")
        if size <= open_room:
            task = _Task(arrays, size)
            self._add(queue, task)
            return task
        parent = _SplitTask(arrays, size)
        start = 0
        while start < size:
            room = limit - queue.sizes[-1]
            if room == 0:
                self._new_batch(queue)
                room = limit
            n = min(room, size - start)
            piece = _Task({k: v[start:start + n] for k, v in arrays.items()}, n, parent)
            parent.pieces.append(piece)
            self._add(queue, piece)
            start += n
        parent._left = len(parent.pieces)  # noqa: SLF001  (set under the queue lock, before any piece runs)
        return parent

    # ------------------------------------------------------------------ the batch threads
    def _ready(self, now: float):
        """(queue, batch) of the batch to run next (the longest waiting), or (None, wait s)."""
        o = self.options
        best, wait = None, None
        for queue in self._queues.values():
            if len(queue.batches) > 1:
                candidate = (0, queue)  # a closed batch is waiting: run it
            elif queue.batches[0]:
                due = queue.open_since + o.batch_timeout_micros / 1e6
                if self._closing or queue.sizes[0] >= o.max_execution_batch_size or now >= due:
                    candidate = (1, queue)
                else:
                    wait = due - now if wait is None else min(wait, due - now)
                    continue
            else:
                continue
            if best is None or candidate[0] < best[0]:
                best = candidate
        if best is None:
            return None, wait
        queue = best[1]
        batch = queue.batches.popleft()
        queue.sizes.popleft()
        if not queue.batches:
            self._new_batch(queue)
        return queue, batch

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    queue, batch = self._ready(time.monotonic())
                    if queue is not None:
                        self._busy += 1
                        break
                    if self._closing and not any(q.batches[0] for q in self._queues.values()):
                        return
                    self._cond.wait(timeout=batch)
            try:
                self._run_batch(queue.key, batch)
            finally:
                with self._cond:
                    self._busy -= 1

    def _run_batch(self, key: tuple, tasks: list) -> None:
        signature_name, input_keys, output_filter = key
        try:
            total = sum(t.size for t in tasks)
            padded = _round_up(self.options.allowed_batch_sizes, total)
            merged = {k: self._merge(k, [t.inputs[k] for t in tasks], padded - total) for k in input_keys}
            outputs = self.model.run(signature_name, merged, list(output_filter) if output_filter else None)
            self.batches_run += 1
            pieces = {}
            cuts = np.cumsum([t.size for t in tasks])[:-1]
            for name, value in outputs.items():
                value = np.asarray(value)
                if value.ndim == 0:
                    raise failed_precondition("Batched output tensor has 0 dimensions")
                if value.shape[0] != padded:
                    raise failed_precondition("Batched output tensor's 0th dimension does not equal the sum of the "
                                              "0th dimension sizes of the input tensors")
                pieces[name] = np.split(value[:total], cuts)
        except Exception as e:  # noqa: BLE001  (the batch's error is each of its tasks' error)
            for t in tasks:
                t.finish(error=e)
            return
        for i, t in enumerate(tasks):
            t.finish({name: parts[i] for name, parts in pieces.items()})

    def _merge(self, key: str, arrays: list, padding: int) -> np.ndarray:
        """The tasks' values of one input along the first dimension (``MergeInputTensors``)."""
        if self.options.pad_variable_length_inputs:
            arrays = _padded(arrays)
        else:
            shape = arrays[0].shape[1:]
            if any(a.shape[1:] != shape for a in arrays[1:]):
                raise failed_precondition(
                    f"Tensors with name '{key}' from different tasks have different shapes and padding is turned off. "
                    "Set pad_variable_length_inputs to true, or ensure that all tensors with the same name have "
                    "equal dimensions starting with the first dim.")
        if padding:
            arrays = arrays + [np.repeat(arrays[-1][:1], padding, axis=0)]
        return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]


def _own_copy(error: Exception) -> Exception:
    """A copy of a batch's error for one waiting thread (each raises its own object)."""
    if isinstance(error, RequestError):
        return RequestError(error.status, error.message)
    try:
        return copy.copy(error)
    except Exception:  # noqa: BLE001  (an exception type that does not copy: share it)
        return error


def _batch_size(arrays: dict) -> int:
    """``ComputeTensorBatchSize``: the inputs' common first dimension."""
    size = None
    for arr in arrays.values():
        if arr.ndim == 0:
            raise invalid("Batching Run() input tensors must have at least one dimension")
        if size is not None and arr.shape[0] != size:
            raise invalid("Batching Run() input tensors must have equal 0th-dimension size")
        size = arr.shape[0]
    if size is None:
        raise invalid("Batching Run() must have at least one input tensor")
    return size


def _round_up(allowed: tuple, size: int) -> int:
    """``RoundToLowestAllowedBatchSize``: the smallest allowed size holding ``size``."""
    for candidate in allowed:
        if candidate >= size:
            return candidate
    return size


def _padded(arrays: list) -> list:
    """``AddPadding``: every value padded after its end, in every dimension but the first,
    to the largest size among the tasks, with the value's own first element."""
    rank = arrays[0].ndim
    widths = [max(a.shape[d] for a in arrays) for d in range(rank)]
    out = []
    for a in arrays:
        pad = [(0, 0)] + [(0, widths[d] - a.shape[d]) for d in range(1, rank)]
        if not any(after for _, after in pad):
            out.append(a)
            continue
        if rank > MAX_PADDED_RANK:
            raise invalid("Only tensors with rank from 1 to 6 can be padded.")
        if a.size < 1:
            raise invalid("Got empty tensor in batch of non-empty tensors.")
        first = a.reshape(-1)[0]
        if a.dtype == object:
            padded = np.full([a.shape[0]] + widths[1:], first, dtype=object)
            padded[tuple(slice(0, n) for n in a.shape)] = a
            out.append(padded)
        else:
            out.append(np.pad(a, pad, constant_values=first))
    return out
