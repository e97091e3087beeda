"""pipeline/progress.py: the readers count rows into the launcher's StageProgress, which reports
rows, rows/s and (with a known total) the share done and an ETA, one log line per interval."""
import logging
import time

import apache_beam as beam

from pipeline.beam_options import pipeline_options
from pipeline.preprocess.raw_io import ReadRawRecords
from pipeline.progress import RowCounter, StageProgress, progress_text
from tests.fakes import raw_records as fx


def test_progress_text_gives_the_rate_and_with_a_total_the_share_and_the_eta():
    assert progress_text("predict", 12_000, 6.0, None) == "predict: 12,000 rows read (2,000/s), 0:06 elapsed"
    assert progress_text("preprocess", 500, 10.0, 2_000) == \
        "preprocess: 500 rows read (50/s), 0:10 elapsed, 25%, ETA 0:30"
    assert progress_text("p", 2_000, 3_700.0, 2_000).endswith("1:01:40 elapsed, 100%")  # done: no ETA


def test_counters_of_several_workers_add_up(tmp_path):
    with StageProgress("stage", interval=60) as progress:
        counters = [RowCounter(progress.directory) for _ in range(3)]
        for i, c in enumerate(counters):
            c.count(10 * (i + 1))
            c.flush()
        assert progress.rows() == 60
    late = counters[0]
    late.count(5)
    late.flush()  # after the stage: its directory is gone and stays gone
    assert not tmp_path.joinpath("x").exists()


def test_the_reader_reports_progress_while_a_pipeline_runs(tmp_path, caplog):
    path = fx.write_csv(str(tmp_path / "in.csv"), fx.good_rows(600))
    cfg = fx.files_config(path)
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        with StageProgress("preprocess", total=600, interval=0.05) as progress:
            with beam.Pipeline(options=pipeline_options(cfg.preprocess.beam)) as p:
                # ~2 s of work downstream of the reader, fused with it: counts reach the launcher meanwhile
                _ = p | ReadRawRecords(path, "csv", cfg) | beam.Map(lambda r: time.sleep(0.003) or r)
            final = progress.rows()
    assert final == 600  # every row the reader read was counted
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]
    assert lines and all(line.startswith("preprocess: ") and "rows read" in line for line in lines)


def test_on_a_terminal_the_progress_is_one_line_redrawn_in_place_and_cleared_at_the_end():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    with StageProgress("predict", interval=0.02, stream=term) as progress:
        counter = RowCounter(progress.directory)
        for n in (5, 7):
            counter.count(n)
            counter.flush()
            time.sleep(0.1)
    text = term.getvalue()
    assert "\n" not in text  # never a new line: the same line is redrawn
    assert "\r\x1b[Kpredict: 5 rows read" in text and "\r\x1b[Kpredict: 12 rows read" in text
    assert text.endswith("\r\x1b[K")  # cleared for the stage's summary line
