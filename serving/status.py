"""Request errors and their status codes: the one table REST and gRPC both map from.

Like TF Serving, every failed request carries a canonical status (invalid argument, not
found, resource exhausted, unavailable, internal) and a message; the REST handler turns
it into ``{"error": message}`` with the HTTP code below, the gRPC servicer into the
matching ``grpc.StatusCode``.
"""
from __future__ import annotations

import os
import re

import grpc

INVALID_ARGUMENT = "INVALID_ARGUMENT"
NOT_FOUND = "NOT_FOUND"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
UNAVAILABLE = "UNAVAILABLE"
INTERNAL = "INTERNAL"

# status -> (HTTP code, gRPC code)
CODES = {
    INVALID_ARGUMENT: (400, grpc.StatusCode.INVALID_ARGUMENT),
    NOT_FOUND: (404, grpc.StatusCode.NOT_FOUND),
    RESOURCE_EXHAUSTED: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    UNAVAILABLE: (503, grpc.StatusCode.UNAVAILABLE),
    INTERNAL: (500, grpc.StatusCode.INTERNAL),
}


class RequestError(Exception):
    """A request the server refuses; ``status`` is one of the keys of ``CODES``."""

    def __init__(self, status: str, message: str):
        if status not in CODES:
            raise ValueError(f"status must be one of {sorted(CODES)}. Received: status={status!r}")
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def http_code(self) -> int:
        return CODES[self.status][0]

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return CODES[self.status][1]


def invalid(message: str) -> RequestError:
    return RequestError(INVALID_ARGUMENT, message)


def not_found(message: str) -> RequestError:
    return RequestError(NOT_FOUND, message)


# An absolute path not inside a relative one: "/x/y" after a start, space, quote, bracket, "=".
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~\-/])/[^\s'\"`,;:()\[\]{}<>|]+")


def redact_paths(message: str, base_dir: str | None = None) -> str:
    """``message`` without absolute file paths, for clients (model status, internal errors).

    Paths under ``base_dir`` become relative to it (``<model>/<version>/saved_model.pb``);
    any other absolute path is cut to its last component (``.../name``). The server's log
    keeps the full message.
    """
    if base_dir:
        roots = {os.path.abspath(base_dir), os.path.realpath(base_dir)}
        for root in sorted(roots, key=len, reverse=True):
            message = message.replace(root.rstrip(os.sep) + os.sep, "").replace(root, ".")
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + m.group(0).rstrip("/").rsplit("/", 1)[-1], message)
