"""``serving.batching``: TF Serving's server-side batching (``BatchingSession`` over a shared
batch scheduler queue) around a fake model that records every call it runs, and
``read_batching_parameters`` on good and bad files. The behaviours are batching_session.cc's
and shared_batch_scheduler.h's (TF Serving 2.19): concurrent calls of one signature run as one
call and get their own rows back; limits, queue capacity, padding and errors as there.
"""
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from core.errors import ConfigError
from serving.batching import BatchingModel, BatchingOptions, BatchingParameters, read_batching_parameters
from serving.session_model import Signature, TensorInfo
from serving.status import FAILED_PRECONDITION, INVALID_ARGUMENT, UNAVAILABLE, RequestError


class FakeModel:
    """``y = 2 x`` (``x`` float [batch, width]) and ``u = upper(s)`` (strings); records the
    batch sizes it ran; ``gate`` (an Event) holds every run until set; ``fail`` raises."""

    def __init__(self, gate=None, fail=None, bad_output=False):
        self.signatures = {
            "double": Signature("tensorflow/serving/predict", {"x": TensorInfo("x:0", tf.float32, (-1, -1))},
                                {"y": TensorInfo("y:0", tf.float32, (-1, -1))}),
            "upper": Signature("tensorflow/serving/predict", {"s": TensorInfo("s:0", tf.string, (-1,))},
                               {"u": TensorInfo("u:0", tf.string, (-1,))}),
        }
        self.signature_defs = {"double": "def"}
        self.gate, self.fail, self.bad_output = gate, fail, bad_output
        self.runs, self.closed = [], False
        self.lock = threading.Lock()

    def signature(self, name):
        if name not in self.signatures:
            raise RequestError(FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
        return self.signatures[name]

    def run(self, signature_name, inputs, output_filter=None):
        sig = self.signature(signature_name)
        if set(inputs) != set(sig.inputs):
            raise RequestError(INVALID_ARGUMENT, f"model: inputs {sorted(inputs)}")
        if self.gate is not None:
            self.gate.wait(10)
        with self.lock:
            self.runs.append((signature_name, {k: np.asarray(v).copy() for k, v in inputs.items()}))
        if self.fail is not None:
            raise self.fail
        if signature_name == "upper":
            return {"u": np.array([v.upper() for v in np.asarray(inputs["s"], dtype=object)], dtype=object)}
        x = np.asarray(inputs["x"], np.float32)
        return {"y": np.float32(1.0) if self.bad_output else x * 2}

    def close(self):
        self.closed = True


def params(**fields):
    p = BatchingParameters()
    for name, value in fields.items():
        if name == "allowed_batch_sizes":
            p.allowed_batch_sizes.extend(value)
        elif name == "pad_variable_length_inputs":
            p.pad_variable_length_inputs = value
        else:
            getattr(p, name).value = value
    return p


@pytest.fixture
def make():
    models = []

    def build(model=None, **fields):
        m = BatchingModel(model or FakeModel(), params(**fields))
        models.append(m)
        return m

    yield build
    for m in models:
        if m.model.gate is not None:
            m.model.gate.set()
        m.close()


def concurrently(fn, args: list) -> list:
    """Runs ``fn(*a)`` for each ``a`` in threads at once; results (or exceptions) in order."""
    results = [None] * len(args)

    def call(i):
        try:
            results[i] = fn(*args[i])
        except Exception as e:  # noqa: BLE001  (the test looks at it)
            results[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results


def rows(*values):
    return {"x": np.array([[v, v] for v in values], np.float32)}


# ----------------------------------------------------------------------------- batching
def test_concurrent_calls_run_as_one_batch_and_get_their_own_rows(make):
    m = make(max_batch_size=8, batch_timeout_micros=500_000, num_batch_threads=1)
    out = concurrently(m.run, [("double", rows(i)) for i in range(4)])
    for i, o in enumerate(out):
        np.testing.assert_array_equal(o["y"], [[2 * i, 2 * i]])
    assert len(m.model.runs) == 1 and m.model.runs[0][1]["x"].shape == (4, 2)


def test_a_full_batch_runs_without_waiting_for_the_timeout(make):
    m = make(max_batch_size=2, batch_timeout_micros=30_000_000, num_batch_threads=1)
    start = time.monotonic()
    out = concurrently(m.run, [("double", rows(1)), ("double", rows(2))])
    assert time.monotonic() - start < 10 and [o["y"][0, 0] for o in out] == [2, 4]


def test_a_lone_call_runs_after_the_timeout(make):
    m = make(max_batch_size=64, batch_timeout_micros=1000, num_batch_threads=1)
    np.testing.assert_array_equal(m.run("double", rows(3))["y"], [[6, 6]])


def test_calls_beyond_max_batch_size_go_to_the_next_batch(make):
    m = make(max_batch_size=3, batch_timeout_micros=300_000, num_batch_threads=1)
    out = concurrently(m.run, [("double", rows(i, i)) for i in range(3)])  # 2 rows each: 2 + 2 > 3
    assert [o["y"].shape for o in out] == [(2, 2)] * 3
    assert sorted(r[1]["x"].shape[0] for r in m.model.runs) == [2, 2, 2]


def test_signatures_are_batched_apart(make):
    m = make(max_batch_size=8, batch_timeout_micros=300_000, num_batch_threads=2)
    out = concurrently(m.run, [("double", rows(1)), ("upper", {"s": np.array([b"a"], dtype=object)}),
                               ("double", rows(2)), ("upper", {"s": [b"b", b"c"]})])
    assert out[1]["u"].tolist() == [b"A"] and out[3]["u"].tolist() == [b"B", b"C"]
    assert sorted((name, len(next(iter(x.values())))) for name, x in m.model.runs) == [("double", 2), ("upper", 3)]


def test_allowed_batch_sizes_pad_with_the_last_tasks_first_row(make):
    m = make(max_batch_size=8, batch_timeout_micros=1000, num_batch_threads=1, allowed_batch_sizes=[4, 8])
    np.testing.assert_array_equal(m.run("double", rows(1, 5, 7))["y"], [[2, 2], [10, 10], [14, 14]])
    (_, fed), = m.model.runs
    np.testing.assert_array_equal(fed["x"][:, 0], [1, 5, 7, 1])


def test_pad_variable_length_inputs_pads_with_the_first_value(make):
    m = make(max_batch_size=8, batch_timeout_micros=500_000, num_batch_threads=1, pad_variable_length_inputs=True)
    out = concurrently(m.run, [("double", {"x": np.array([[1, 2, 3]], np.float32)}),
                               ("double", {"x": np.array([[4]], np.float32)})])
    (_, fed), = m.model.runs
    assert sorted(fed["x"].tolist()) == [[1, 2, 3], [4, 4, 4]]
    assert sorted(o["y"].tolist() for o in out) == [[[2, 4, 6]], [[8, 8, 8]]]


def test_different_widths_without_padding_fail_the_whole_batch(make):
    m = make(max_batch_size=8, batch_timeout_micros=500_000, num_batch_threads=1)
    out = concurrently(m.run, [("double", {"x": np.array([[1, 2]], np.float32)}),
                               ("double", {"x": np.array([[1, 2, 3]], np.float32)})])
    assert all(isinstance(e, RequestError) and e.status == FAILED_PRECONDITION for e in out)
    assert "Tensors with name 'x' from different tasks have different shapes and padding is turned off" in out[0].message


def test_an_error_of_the_batched_run_goes_to_every_task(make):
    m = make(FakeModel(fail=RequestError(INVALID_ARGUMENT, "bad batch")), max_batch_size=8,
             batch_timeout_micros=300_000, num_batch_threads=1)
    out = concurrently(m.run, [("double", rows(1)), ("double", rows(2))])
    assert [(e.status, e.message) for e in out] == [(INVALID_ARGUMENT, "bad batch")] * 2 and out[0] is not out[1]


def test_an_output_without_the_batch_dimension_is_failed_precondition(make):
    m = make(FakeModel(bad_output=True), max_batch_size=8, batch_timeout_micros=1000, num_batch_threads=1)
    with pytest.raises(RequestError) as e:
        m.run("double", rows(1))
    assert (e.value.status, e.value.message) == (FAILED_PRECONDITION, "Batched output tensor has 0 dimensions")


# ----------------------------------------------------------------------------- limits
def test_a_task_larger_than_max_batch_size_is_invalid_argument(make):
    m = make(max_batch_size=2)
    with pytest.raises(RequestError) as e:
        m.run("double", rows(1, 2, 3))
    assert (e.value.status, e.value.message) == (INVALID_ARGUMENT, "Task size 3 is larger than maximum input batch "
                                                                   "size 2")


def test_large_batch_splitting_runs_a_large_task_in_pieces(make):
    m = make(max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=3,
             batch_timeout_micros=1000, num_batch_threads=1)
    np.testing.assert_array_equal(m.run("double", rows(*range(7)))["y"][:, 0], [0, 2, 4, 6, 8, 10, 12])
    assert sorted(r[1]["x"].shape[0] for r in m.model.runs) == [1, 3, 3]


def test_a_full_queue_is_unavailable(make):
    gate = threading.Event()
    m = make(FakeModel(gate=gate), max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1,
             batch_timeout_micros=0)
    first = threading.Thread(target=m.run, args=("double", rows(1)))
    first.start()
    deadline = time.monotonic() + 10
    while not m._busy and time.monotonic() < deadline:  # noqa: SLF001  (the first batch is running)
        time.sleep(0.01)
    second = threading.Thread(target=m.run, args=("double", rows(2)))
    second.start()  # waits in the open batch
    time.sleep(0.2)
    with pytest.raises(RequestError) as e:
        m.run("double", rows(3))
    assert e.value.status == UNAVAILABLE and e.value.message.startswith(
        "The batch scheduling queue to which this task was submitted is full; currently 1 batches enqueued and "
        "max_enqueued_batches is 1")
    gate.set()
    first.join(10)
    second.join(10)


def test_inputs_that_are_not_the_signatures_are_run_by_the_model_itself(make):
    m = make(max_batch_size=8)
    with pytest.raises(RequestError, match=r"model: inputs \['y'\]"):
        m.run("double", {"y": rows(1)["x"]})
    assert m.batches_run == 0


def test_inputs_of_unequal_first_dimensions_are_invalid_argument(make):
    model = FakeModel()
    model.signatures["pair"] = Signature("tensorflow/serving/predict", {
        "a": TensorInfo("a:0", tf.float32, (-1,)), "b": TensorInfo("b:0", tf.float32, (-1,))}, {})
    m = make(model, max_batch_size=8)
    with pytest.raises(RequestError) as e:
        m.run("pair", {"a": [1.0, 2.0], "b": [1.0]})
    assert e.value.message == "Batching Run() input tensors must have equal 0th-dimension size"


def test_the_wrapper_has_the_models_interface(make):
    model = FakeModel()
    m = make(model)
    assert m.signatures is model.signatures and m.signature_defs is model.signature_defs
    assert m.signature("upper") is model.signatures["upper"]
    m.close()
    assert model.closed


# ----------------------------------------------------------------------------- parameters
def test_the_sample_parameters_file_is_read(tmp_path):
    from tests.conftest import REPO
    import os

    options = BatchingOptions.from_parameters(read_batching_parameters(
        os.path.join(REPO, "serving", "tfserving", "batching_parameters.txt")))
    assert (options.max_batch_size, options.batch_timeout_micros, options.max_enqueued_batches,
            options.num_batch_threads, options.pad_variable_length_inputs) == (1024, 2000, 64, 2, False)


def test_unset_parameters_take_tf_servings_defaults():
    options = BatchingOptions.from_parameters(BatchingParameters())
    assert (options.max_batch_size, options.batch_timeout_micros, options.max_enqueued_batches,
            options.allowed_batch_sizes, options.enable_large_batch_splitting) == (1000, 0, 10, (), False)


@pytest.mark.parametrize("text,fragment", [
    ("max_batch_size { value: 8 } bogus_field: 1", "not a BatchingParameters text proto"),
    ("max_batch_size: 8", "not a BatchingParameters text proto"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4", "Last entry in allowed_batch_sizes must match "
                                                             "max_batch_size; last entry was 4; expected 8"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 4 allowed_batch_sizes: 8",
     "allowed_batch_sizes entries must be monotonically increasing"),
    ("num_batch_threads { value: 0 }", "num_batch_threads must be positive; was 0"),
])
def test_a_bad_parameters_file_is_a_config_error_naming_it(tmp_path, text, fragment):
    path = tmp_path / "batching.txt"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        read_batching_parameters(str(path))
    assert str(path) in str(e.value) and fragment in str(e.value)


def test_a_missing_parameters_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        read_batching_parameters(str(tmp_path / "nope.txt"))
