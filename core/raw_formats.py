"""Input formats: decoders from one raw file to raw records, registered in ``INPUT_FORMATS``.

``read_file(path, fmt, csv_cfg)`` is the one dispatch every reader uses (the Beam read in
``pipeline/preprocess/raw_io.py`` and the in-process read of a split in
``serving/raw_examples.py``); a new format is one function registered here.

A *raw record* is a plain dict (picklable, runner independent)::

    {"source": "/data/part-00000.csv",   # the file it came from
     "position": 17,                     # CSV/JSONL: 1-based line number; Parquet/TFRecord: 0-based record index
     "raw": "u1,i2,...",                 # the record as read, for the dead-letter output
     "values": {"user_id": "u1", "price": "9.5", "click": "1", "note": None}}

``values`` maps every column the record carries to its value as a string, or ``None`` when
missing (a configured missing-value string in CSV, ``null``/absent elsewhere), or a list of
elements (a JSON array, a Parquet list, a ``tf.Example`` feature with several values; the
record checks of ``core.records`` type them). A record that
cannot even be split into columns carries ``"error": (reason, detail)`` instead of
``values``; validation sends it to the dead letters. Numbers keep their exact decimal text
(``repr`` of a float), so every format yields the same strings for the same data.

Per-record problems never stop a read: a line the ``csv`` module rejects (a field over
``csv.field_size_limit()``, a bare ``\r`` inside an unquoted field), invalid UTF-8, a NUL byte
or broken JSON become records with an ``error``. A whole-file problem does stop it:
``read_file`` raises ``InputError`` naming the file for a truncated or corrupt compressed
file (gzip, bzip2 and xz/lzma are decompressed with Python's own modules, which detect a
cut where Beam's reader stops quietly), a corrupt TFRecord or Parquet file, or a CSV header
that cannot be parsed.
"""
from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import json
import lzma
import math
import zlib
from typing import IO, Callable, Iterator, Optional

from core.errors import InputError, PipelineError
from core.registries import INPUT_FORMATS

WRONG_COLUMN_COUNT = "wrong_column_count"
UNPARSABLE_RECORD = "unparsable_record"
INVALID_ENCODING = "invalid_encoding"


def _record(source: str, position: int, raw: str, values: dict | None = None, error=None) -> dict:
    rec = {"source": source, "position": position, "raw": raw}
    if error is not None:
        rec["error"] = error
    else:
        rec["values"] = values
    return rec


def to_text(value) -> str | None:
    """A decoded value as the string a CSV file would carry (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)
    return str(value)


def to_raw(value):
    """A decoded value as a raw record value: a list (JSON array, Parquet list, a ``tf.Example``
    feature with several values) stays a list of its elements (bytes decoded to str, other
    elements as they are, so validation can name a wrong type); anything else is ``to_text``."""
    if isinstance(value, (list, tuple)):
        return [e.decode("utf-8", errors="replace") if isinstance(e, bytes) else e for e in value]
    return to_text(value)


def text_lines(stream: IO[bytes]) -> Iterator[str]:
    """Decoded lines (UTF-8, undecodable bytes as U+FFFD) of a binary stream, line ends kept.

    Works on Beam's ``CompressedFile``, which is not a full ``io`` object.
    """
    while True:
        line = stream.readline()
        if not line:
            return
        yield line.decode("utf-8", errors="replace")


def _csv_lines(stream: IO[bytes], consumed: list) -> Iterator[str]:
    """Yields the lines of ``stream`` and records them in ``consumed`` (to rebuild the raw record)."""
    for line in text_lines(stream):
        consumed.append(line)
        yield line


def _text_problem(raw: str) -> str | None:
    """Why a decoded text line is not text (invalid UTF-8, a NUL byte), or None."""
    if "\ufffd" in raw:
        return "the line is not valid UTF-8"
    if "\x00" in raw:
        return "the line contains a NUL byte"
    return None


def _csv_problem(error: csv.Error) -> str:
    """The dead-letter detail of a line the ``csv`` module rejects."""
    text = str(error)
    if "field larger than field limit" in text:
        return f"not a valid CSV record: a field is longer than {csv.field_size_limit()} characters"
    if "new-line character seen in unquoted field" in text:
        return "not a valid CSV record: a carriage return (\\r) inside an unquoted field"
    return f"not a valid CSV record: {text}"


def renamed_columns(names: list[str], csv_cfg) -> list[str]:
    """The column names a CSV record carries: ``names`` (the stripped header line, or
    ``column_names``) with ``csv_cfg.rename`` ({name in the file: new name}) applied."""
    rename = getattr(csv_cfg, "rename", None) or {}
    return [rename.get(n, n) for n in names]


def read_csv(stream: IO[bytes], source: str, csv_cfg) -> Iterator[dict]:
    """Records of a CSV stream: header (or ``csv_cfg.column_names``), renamed by
    ``csv_cfg.rename``, delimiter, quoting.

    Quoted fields may hold the delimiter, quotes and newlines (the record then spans several
    lines; ``position`` is its first line). Values equal to one of ``csv_cfg.missing_values``
    (after stripping, when ``strip_whitespace``) become ``None``. A line the ``csv`` module
    rejects (a field over ``csv.field_size_limit()``, a bare ``\r`` in an unquoted field) is an
    ``unparsable_record``; reading goes on with the next line. A header it rejects is
    ``csv.Error`` (a whole-file failure).
    """
    consumed: list[str] = []
    reader = csv.reader(_csv_lines(stream, consumed), delimiter=csv_cfg.delimiter, quotechar=csv_cfg.quotechar,
                        skipinitialspace=csv_cfg.strip_whitespace)
    missing = set(csv_cfg.missing_values)
    names = list(csv_cfg.column_names)
    if csv_cfg.header:
        try:
            header = next(reader)
        except StopIteration:
            return
        names = [h.strip() for h in header]
    names = renamed_columns(names, csv_cfg)
    line = 1 if not csv_cfg.header else reader.line_num + 1
    consumed.clear()
    while True:
        try:
            fields = next(reader)
            problem = None
        except StopIteration:
            return
        except csv.Error as e:  # the reader resumes with the next line
            fields, problem = None, _csv_problem(e)
        raw = "".join(consumed).rstrip("\r\n")
        consumed.clear()
        position, line = line, reader.line_num + 1
        if problem:
            yield _record(source, position, raw, error=(UNPARSABLE_RECORD, problem))
            continue
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank line is not a record
        problem = _text_problem(raw)
        if problem:
            yield _record(source, position, raw, error=(INVALID_ENCODING, problem))
            continue
        if len(fields) != len(names):
            detail = f"expected {len(names)} columns, got {len(fields)}"
            yield _record(source, position, raw, error=(WRONG_COLUMN_COUNT, detail))
            continue
        if csv_cfg.strip_whitespace:
            fields = [f.strip() for f in fields]
        values = {n: (None if f in missing else f) for n, f in zip(names, fields)}
        yield _record(source, position, raw, values)


def read_jsonl(stream: IO[bytes], source: str) -> Iterator[dict]:
    """Records of a JSON-lines stream: one JSON object per line; ``null`` or absent is missing."""
    for number, line in enumerate(text_lines(stream), 1):
        raw = line.rstrip("\r\n")
        if not raw.strip():
            continue
        problem = _text_problem(raw)
        if problem:
            yield _record(source, number, raw, error=(INVALID_ENCODING, problem))
            continue
        try:
            obj = json.loads(raw)
        except ValueError as e:
            yield _record(source, number, raw, error=(UNPARSABLE_RECORD, f"not valid JSON: {e}"))
            continue
        if not isinstance(obj, dict):
            yield _record(source, number, raw, error=(UNPARSABLE_RECORD, f"expected a JSON object, got {type(obj).__name__}"))
            continue
        bad = [k for k, v in obj.items() if isinstance(v, dict)]
        if bad:
            yield _record(source, number, raw, error=(UNPARSABLE_RECORD, f"field {bad[0]!r}: expected a scalar "
                                                                          f"value or a list, got an object"))
            continue
        yield _record(source, number, raw, {k: to_raw(v) for k, v in obj.items()})


def read_parquet(stream: IO[bytes], source: str, batch_rows: int = 8192) -> Iterator[dict]:
    """Records of a Parquet file, read in row batches with pyarrow."""
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(stream).iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            values = {k: to_raw(v) for k, v in row.items()}
            yield _record(source, index, json.dumps(values, default=str), values)
            index += 1


def example_values(serialized: bytes) -> tuple[dict | None, str | None]:
    """(values, None) of a serialized ``tf.train.Example``, or (None, error detail)."""
    from tensorflow.core.example import example_pb2

    try:
        example = example_pb2.Example.FromString(serialized)
    except Exception as e:  # noqa: BLE001  (protobuf raises its own DecodeError)
        return None, f"not a tf.train.Example: {e}"
    values = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        items = list(getattr(feature, kind).value) if kind else []
        # One value: a scalar (a list column splits it by its separator); several: a list.
        values[name] = to_raw(items) if len(items) > 1 else (to_text(items[0]) if items else None)
    return values, None


def _check_gzip_complete(path: str, source: str, records: int) -> None:
    """``InputError`` unless the gzip stream of ``path`` runs to its end-of-stream marker.

    TF's GZIP reader can end quietly at a cut that falls on a record boundary, so a truncated
    ``.tfrecord.gz`` would lose its tail silently; Python's gzip raises there. (One more
    decompression pass over the file, the price of never dropping records.)"""
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as stream:
            while stream.read(1 << 20):
                pass
    except (EOFError, OSError, zlib.error) as e:
        raise InputError(f"input file {source} is a corrupt or truncated TFRecord file "
                         f"(gzip stream cut after {records} records): {e}") from None


def read_tfrecord(path: str, source: str) -> Iterator[dict]:
    """Records of a TFRecord file of ``tf.train.Example`` (gzip when the name ends in .gz).

    A record that is not a ``tf.Example`` is an ``unparsable_record``; a corrupt or truncated
    file (bad framing or checksum, a cut gzip stream) raises ``InputError`` naming it: TFRecord
    framing cannot be resynchronised after the damage.
    """
    import tensorflow as tf

    compression = "GZIP" if path.endswith(".gz") else ("ZLIB" if path.endswith(".zlib") else "")
    dataset = tf.data.TFRecordDataset(path, compression_type=compression)
    serialized_records = dataset.as_numpy_iterator()
    index = -1
    while True:
        try:
            serialized = next(serialized_records)
        except StopIteration:
            if compression == "GZIP":
                _check_gzip_complete(path, source, index + 1)
            return
        except tf.errors.DataLossError as e:
            raise InputError(f"input file {source} is a corrupt or truncated TFRecord file "
                             f"(after {index + 1} records): {e.message}") from None
        except tf.errors.OpError as e:
            raise InputError(f"input file {source} cannot be read as tfrecord: {e.message}") from None
        index += 1
        values, error = example_values(serialized)
        raw = json.dumps(values) if values is not None else serialized.hex()[:2000]
        if error:
            yield _record(source, index, raw, error=(UNPARSABLE_RECORD, error))
        else:
            yield _record(source, index, raw, values)


# ----------------------------------------------------------------------------- files and formats


def list_input_files(pattern: str) -> list[str]:
    """Sorted paths matching ``pattern`` on any Beam filesystem; ``InputError`` when there are none."""
    from apache_beam.io.filesystems import FileSystems

    if not pattern:
        raise InputError("no input: data.path is empty")
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # noqa: BLE001  (Beam raises BeamIOError or filesystem errors)
        raise InputError(f"cannot list input files {pattern!r}: {e}") from None
    paths = sorted(m.path for m in matches if not m.path.endswith("/"))
    if not paths:
        raise InputError(f"no input files match {pattern!r}")
    return paths


def _opener(path: str) -> Callable[[str], IO[bytes]]:
    """``open_stream(compression)`` over Beam's filesystems (``CompressionTypes`` value)."""
    from apache_beam.io.filesystems import FileSystems

    return lambda compression: FileSystems.open(path, compression_type=compression)


# Compressions read with Python's own decompressors: they raise on a truncated or corrupt
# stream (EOFError, OSError, zlib.error), where Beam's ``CompressedFile`` stops quietly at the damage.
# Other compressions (.deflate, .zst) are left to Beam ("auto").
_DECOMPRESSORS = {
    ".gz": ("gzip", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")),
    ".bz2": ("bzip2", lambda raw: bz2.BZ2File(raw, mode="rb")),
    ".xz": ("xz", lambda raw: lzma.LZMAFile(raw, mode="rb")),
    ".lzma": ("lzma", lambda raw: lzma.LZMAFile(raw, mode="rb")),
}


def compression_of(path: str) -> str | None:
    """'gzip', 'bzip2', 'xz' or 'lzma' when ``path``'s extension says so, else None."""
    lowered = path.lower()
    return next((name for ext, (name, _) in _DECOMPRESSORS.items() if lowered.endswith(ext)), None)


@contextlib.contextmanager
def open_decompressed(path: str, open_stream: Callable[[str], IO[bytes]]):
    """The decompressed binary stream of ``path`` (compression from its extension)."""
    lowered = path.lower()
    make = next((m for ext, (_, m) in _DECOMPRESSORS.items() if lowered.endswith(ext)), None)
    if make is None:
        with open_stream("auto") as stream:
            yield stream
        return
    with open_stream("uncompressed") as raw, make(raw) as stream:
        yield stream


def _whole_file_failure(path: str, fmt: str, e: BaseException) -> InputError:
    compression = compression_of(path)
    decompression_error = isinstance(e, (EOFError, lzma.LZMAError, zlib.error)) or (
        compression is not None and isinstance(e, OSError) and not isinstance(e, FileNotFoundError))
    if decompression_error:
        return InputError(f"input file {path} is a truncated or corrupt {compression or fmt} file: {e}")
    if isinstance(e, csv.Error):
        return InputError(f"input file {path}: the CSV header cannot be parsed: {e}")
    return InputError(f"input file {path} cannot be read as {fmt}: {type(e).__name__}: {e}")


def _failing_whole_file(records: Iterator[dict], path: str, fmt: str) -> Iterator[dict]:
    """``records``, with any error of the file itself (not of one record) as ``InputError``."""
    try:
        yield from records
    except PipelineError:
        raise
    except Exception as e:  # noqa: BLE001  (per-record problems are records with an "error")
        raise _whole_file_failure(path, fmt, e) from e


def read_csv_header(path: str, csv_cfg) -> list[str]:
    """The column names of a CSV file's first line (decompressed by extension), renamed by
    ``csv_cfg.rename`` as ``read_csv`` renames them.

    Raises ``InputError`` naming the file when it cannot be opened, decompressed or parsed,
    or when the header lacks a column ``csv_cfg.rename`` renames (or renaming gives two
    columns one name).
    """
    try:
        with open_decompressed(path, _opener(path)) as f:
            row = next(csv.reader(text_lines(f), delimiter=csv_cfg.delimiter, quotechar=csv_cfg.quotechar,
                                  skipinitialspace=csv_cfg.strip_whitespace), [])
    except PipelineError:
        raise
    except Exception as e:  # noqa: BLE001  (a whole-file failure, named)
        raise _whole_file_failure(path, "csv", e) from e
    header = [h.strip() for h in row]
    rename = getattr(csv_cfg, "rename", None) or {}
    if header and rename:
        lacking = [old for old in rename if old not in header]
        if lacking:
            raise InputError(f"{path}: data.csv.rename: the CSV header has no column(s) {lacking} (header: {header})")
        names = renamed_columns(header, csv_cfg)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InputError(f"{path}: data.csv.rename: after renaming, column name(s) {twice} appear twice "
                             f"(header: {header})")
        return names
    return header


def read_file(path: str, fmt: str, csv_cfg, open_stream: Optional[Callable[[str], IO[bytes]]] = None) -> Iterator[dict]:
    """The raw records of one file in format ``fmt`` (``ConfigError`` for an unknown format).

    Per-record problems are records with an ``error``; a problem of the whole file (it cannot
    be opened, is truncated or corrupt) raises ``InputError`` naming it while iterating.

    Args:
      path: the file (the records' ``source``).
      fmt: a name registered in ``INPUT_FORMATS``.
      csv_cfg: ``cfg.data.csv`` (header, column names, delimiter, quoting, missing values).
      open_stream: ``open_stream(compression) -> binary stream`` with a Beam ``CompressionTypes``
        value ("auto", "uncompressed"); default: Beam's ``FileSystems.open(path)``.
    """
    decoder = INPUT_FORMATS.get(fmt)
    return _failing_whole_file(decoder(path, csv_cfg, open_stream or _opener(path)), path, fmt)


@INPUT_FORMATS.register("csv", "delimited text, header line or data.csv.column_names (gzip/bzip2/xz by extension)")
def _csv_file(path, csv_cfg, open_stream):
    with open_decompressed(path, open_stream) as stream:
        yield from read_csv(stream, path, csv_cfg)


@INPUT_FORMATS.register("jsonl", "one JSON object per line (gzip/bzip2/xz by extension)")
def _jsonl_file(path, csv_cfg, open_stream):
    with open_decompressed(path, open_stream) as stream:
        yield from read_jsonl(stream, path)


@INPUT_FORMATS.register("parquet", "Apache Parquet, one row per record")
def _parquet_file(path, csv_cfg, open_stream):
    with open_stream("uncompressed") as stream:
        yield from read_parquet(stream, path)


@INPUT_FORMATS.register("tfrecord", "TFRecord of tf.train.Example ('.gz': GZIP)")
def _tfrecord_file(path, csv_cfg, open_stream):
    yield from read_tfrecord(path, path)
