"""Entry point of ``python -m pipeline``."""
import sys

from pipeline import console

if console.wants_filter(sys.argv[1:]):
    console.filter_stderr()  # before TensorFlow loads: its C++ start-up lines go to fd 2 directly

from pipeline.cli import main  # noqa: E402

sys.exit(main())
