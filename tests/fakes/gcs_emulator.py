"""A local GCS server (``gcp-storage-emulator`` from PyPI) for Beam's ``gs://`` IO.

``GcsEmulator`` starts the emulator in its own process on a loopback port with one bucket,
and sets, in ``os.environ`` (inherited by every Beam worker process started after it):

* ``STORAGE_EMULATOR_HOST``: google-cloud-storage (Beam's GCS client) talks to the emulator;
  ``core.fs`` then sends ``gs://`` through Beam's ``FileSystems``, since TF's own GCS client
  cannot be pointed at an emulator.
* ``GOOGLE_APPLICATION_CREDENTIALS``: a user-credentials file holding a token that never
  expires, so google-auth neither looks for a metadata server (15-30 s of retries without
  one) nor refreshes (the emulator accepts any token).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.fakes.procs import free_port, wait_for_port


def emulator_available() -> bool:
    try:
        import gcp_storage_emulator  # noqa: F401
    except ImportError:
        return False
    return True


class GcsEmulator:
    """``with GcsEmulator(tmp_dir, bucket="test") as gcs: gcs.url("x")`` -> ``gs://test/x``."""

    def __init__(self, tmp_dir: str, bucket: str = "test-bucket"):
        self.bucket, self.port = bucket, free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self._creds = os.path.join(tmp_dir, "emulator-credentials.json")
        self._log = os.path.join(tmp_dir, "gcs-emulator.log")
        self._proc = None
        self._saved: dict[str, str | None] = {}

    def url(self, *parts: str) -> str:
        return "/".join([f"gs://{self.bucket}", *parts])

    def __enter__(self) -> "GcsEmulator":
        with open(self._creds, "w", encoding="utf-8") as f:
            json.dump({"type": "authorized_user", "client_id": "emulator", "client_secret": "emulator",
                       "refresh_token": "emulator", "token": "emulator", "expiry": "2999-01-01T00:00:00Z",
                       "quota_project_id": "emulator"}, f)
        log = open(self._log, "wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(self.port),
             "--in-memory", "--default-bucket", self.bucket], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for_port(self.port, self._proc, self._log, timeout=60)
        for key, value in (("STORAGE_EMULATOR_HOST", self.host), ("GOOGLE_APPLICATION_CREDENTIALS", self._creds),
                           ("GOOGLE_CLOUD_PROJECT", "emulator")):
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value
        return self

    def __exit__(self, *exc) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
