"""TF Serving's REST API (2.19's ``http_rest_api_handler.cc``) on a bounded HTTP/1.1 server.

Routes (``RestHandler``; the path regexes are TF Serving's, case-insensitive):

  GET  /v1/models/NAME[/versions/V|/labels/L]                  model version status
  GET  /v1/models/NAME[/versions/V|/labels/L]/metadata         every SignatureDef
  POST /v1/models/NAME[/versions/V|/labels/L]:predict          {"signature_name", "instances" | "inputs"}
  POST /v1/models/NAME[/versions/V|/labels/L]:classify         {"signature_name", "context", "examples"}
  POST /v1/models/NAME[/versions/V|/labels/L]:regress          {"signature_name", "context", "examples"}

Every request goes through ``RestHandler.respond``; every failure of a request under
``/v1/`` becomes ``{"error": message}`` with the HTTP code of its canonical status
(``serving.status.CODES``: 400 invalid argument, 404 not found, ...); the server keeps
running. See ``RestHandler`` for what TF Serving answers outside these routes.

``RestServer`` is the socket side: keep-alive HTTP/1.1 with ``Content-Length`` or chunked
bodies, a body-size limit (413), header and body read timeouts (408), a fixed pool of worker
threads and a cap on open connections (503); malformed framing is a 400. See its docstring.
"""
from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import selectors
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from http import HTTPStatus
from typing import NamedTuple

from google.protobuf import json_format
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving import json_codec
from serving.status import RequestError, invalid, redact_paths

log = logging.getLogger("serving.rest")

# The routes of TF Serving 2.19 (http_rest_api_util.cc), matched against the whole request
# target (path and query, as net_http's uri_path() is), case-insensitively as its RE2 "(?i)".
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)  # HttpRestApiHandler::kPathRegex; else libevent's 404
_PREDICTION_PATH = re.compile(  # kPredictionApiGegex (POST)
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE)
_MODEL_PATH = re.compile(  # kModelStatusApiRegex (GET)
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE)
_ALLOWED_METHODS = {"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"}  # evhttp_set_allowed_methods
_KNOWN_METHODS = _ALLOWED_METHODS | {"TRACE", "CONNECT"}  # what libevent parses at all
_ORIGIN = re.compile(r"https?://")
_PAGE = "<HTML><HEAD>\n<TITLE>{code} {reason}</TITLE>\n</HEAD><BODY>\n<H1>{reason}</H1>\n</BODY></HTML>\n"
JSON_TYPE = "application/json"


class Reply(NamedTuple):
    """One HTTP response: status code, body bytes and Content-Type (None: no body type)."""

    code: int
    body: bytes
    content_type: str | None = JSON_TYPE


def _page(code: int) -> Reply:
    """libevent's ``evhttp_send_error`` page (what TF Serving answers outside its handler)."""
    reason = HTTPStatus(code).phrase
    return Reply(code, _PAGE.format(code=code, reason=reason).encode("latin-1"), "text/html")


def _error_body(message: str) -> bytes:
    """TF Serving's ``MakeJsonFromStatus``: ``{"error": message}`` (rapidjson PrettyWriter layout)."""
    return ('{\n    "error": ' + json.dumps(message, ensure_ascii=False) + "\n}").encode("utf-8", "replace")


def _pretty(obj) -> str:
    """protobuf's ``MessageToJsonString`` layout with ``add_whitespace`` (1-space indent, final newline)."""
    return json.dumps(obj, indent=1, ensure_ascii=False) + "\n"


def _proto_json(message) -> dict:
    """A message as TF Serving's JSON printer gives it (``always_print_primitive_fields``,
    proto field names): default-valued fields included (``"signature_name": ""``,
    ``"unknown_rank": false``, ``"defaults": {}``), int64 as strings, enums by name, and
    each message's fields in declaration order with its set oneof fields last (``dtype``,
    ``tensor_shape``, then ``name`` in a ``TensorInfo``; ``version`` last in a ``ModelSpec``)."""
    return _ordered(message.DESCRIPTOR, json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True))


def _ordered(descriptor, obj):
    if not isinstance(obj, dict) or descriptor.full_name.startswith("google.protobuf."):
        return obj
    fields = sorted(descriptor.fields, key=lambda f: f.containing_oneof is not None)  # stable: declaration order
    out = {}
    for f in fields:
        if f.name not in obj:
            continue
        value = obj[f.name]
        if f.message_type is not None:
            if f.message_type.GetOptions().map_entry:
                value_field = f.message_type.fields_by_name["value"]
                if value_field.message_type is not None:
                    value = {k: _ordered(value_field.message_type, v) for k, v in value.items()}
            elif isinstance(value, list):
                value = [_ordered(f.message_type, v) for v in value]
            else:
                value = _ordered(f.message_type, value)
        out[f.name] = value
    return out


def _decoded_arg(text: str) -> str:
    """A model name or label as ``DecodeArg`` (curl_easy_unescape) decodes it: %XX escapes."""
    raw = urllib.parse.unquote(text, encoding="latin-1").encode("latin-1")
    return raw.decode("utf-8", "replace")


def _request_path(target: str) -> str:
    """The path and query of a request target (an absolute-form target loses its authority)."""
    if target[:7].lower() == "http://" or target[:8].lower() == "https://":
        rest = target.split("://", 1)[1]
        cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
        path = rest[cut:]
        return path if path.startswith("/") else "/" + path
    return target


class RestHandler:
    """TF Serving's REST API (``HttpRestApiHandler``) over a ``ServingApi``.

    ``respond(method, target, body, headers)`` gives the ``Reply`` TF Serving gives:

    * a method libevent does not know is 400 and TRACE / CONNECT are 501, and a target not
      under ``/v1/`` is 404 (``Not Found``), each as libevent's HTML page;
    * ``OPTIONS`` (a CORS preflight) is 200 with an empty body when the request has an
      ``Origin`` header with ``http://`` or ``https://``, else 400 with an empty body;
    * ``POST /v1/models/NAME[/versions/V|/labels/L]:predict|classify|regress`` and ``GET
      /v1/models/NAME[/versions/V|/labels/L][/metadata]`` run Predict / Classify / Regress,
      GetModelMetadata and GetModelStatus; the routes match case-insensitively, but the verb
      and ``metadata`` are compared as written (``:PREDICT`` is a malformed request,
      ``/METADATA`` the model's status, as in TF Serving); the query string is part of the
      path they match (``/v1/models/m?x=1`` names the model ``m?x=1``); NAME and L are
      %-decoded; anything else under ``/v1/`` is ``400 Malformed request: METHOD TARGET``;
    * every failure is ``{"error": message}`` with the HTTP code of its canonical status
      (``serving.status.CODES``: 400 invalid argument and failed precondition, 404 not
      found, 429 resource exhausted, 501 unimplemented, 503 unavailable, 500 internal...).

    Status and metadata are printed as TF Serving's protobuf JSON printer prints them
    (``_proto_json``); Predict / Classify / Regress bodies as ``serving.json_codec`` encodes
    them. (One difference: a version beyond int64 is TF Serving's 400 ``Failed to convert
    version`` with an empty body there, with the message in ``{"error": ...}`` here.)
    """

    def __init__(self, api):
        self.api = api

    def respond(self, method: str, target: str, body: bytes, headers: dict | None = None) -> Reply:
        if method not in _KNOWN_METHODS:
            return _page(400)
        if method not in _ALLOWED_METHODS:
            return _page(501)
        path = _request_path(target)
        if not _API_PATH.fullmatch(path):
            return _page(404)
        if method == "OPTIONS":
            origins = (headers or {}).get("origin", [])
            return Reply(200 if origins and _ORIGIN.search(origins[0]) else 400, b"", None)
        try:
            return Reply(200, self._route(method, path, body))
        except RequestError as e:
            return Reply(e.http_code, _error_body(e.message))
        except Exception as e:  # noqa: BLE001  (shape every failure; the server keeps running)
            log.exception("internal error on %s %s", method, path)
            return Reply(500, _error_body(redact_paths(f"{type(e).__name__}: {e}")))

    def dispatch(self, method: str, path: str, body: bytes, headers: dict | None = None) -> tuple[int, object]:
        """``respond`` with the body as the Python object of its JSON (None when the reply
        is not JSON or empty): ``(code, object)``."""
        reply = self.respond(method, path, body, headers)
        if reply.content_type != JSON_TYPE or not reply.body:
            return reply.code, None
        return reply.code, json.loads(reply.body)

    def _route(self, method: str, path: str, body: bytes) -> bytes:
        m = (_PREDICTION_PATH if method == "POST" else _MODEL_PATH).fullmatch(path) if method in ("GET", "POST") else None
        if m is not None:
            name, version, label, action = m.groups()
            name = _decoded_arg(name) if name else ""
            if version is not None:
                number = int(version)
                if number > 2 ** 63 - 1:
                    raise invalid(f"Failed to convert version: {version} to numeric.")
                version = number
            label = _decoded_arg(label) if label else None
            if method == "POST":
                if action in ("predict", "classify", "regress"):
                    return self._infer(action, name, version, label, body)
            elif action == "metadata":
                return self._metadata(name, version, label)
            else:
                return self._status(name, version, label)
        raise invalid(f"Malformed request: {method} {path}")

    def _status(self, name: str, version, label) -> bytes:
        if not name:
            raise invalid("Missing model name in request.")
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in self.api.status(name, version, **_labelled(label)):
            entry = response.model_version_status.add(version=int(s["version"]))
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(s["state"])
            code = s.get("error_code") or ("UNKNOWN" if s["error"] else "OK")
            entry.status.error_code = error_codes_pb2.Code.Value(code)
            entry.status.error_message = s["error"] or ""
        return _pretty(_proto_json(response)).encode("utf-8", "replace")

    def _metadata(self, name: str, version, label) -> bytes:
        if not name:
            raise invalid("Missing model name in request.")
        v, defs = self.api.metadata(name, version, **_labelled(label))
        spec = model_pb2.ModelSpec(name=name)
        spec.version.value = int(v)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in defs.items():
            signatures.signature_def[key].CopyFrom(signature_def)
        # http_rest_api_util.cc ToJsonString: the two messages printed apart, then joined
        return ("{\n" + '"model_spec":' + _pretty(_proto_json(spec)) + ",\n" + '"metadata": {'
                + '"signature_def": ' + _pretty(_proto_json(signatures)) + "}\n" + "}\n").encode("utf-8", "replace")

    def _infer(self, verb: str, name: str, version, label, body: bytes) -> bytes:
        request = json_codec.parse_request(body)
        signature = request.get("signature_name", "")
        if not isinstance(signature, str):
            raise invalid(f"JSON Value: {json_codec.debug_json(request)} not formatted correctly. 'signature_name' key "
                          "must be a string value.")
        if verb == "predict":
            row = {}

            def inputs(sig):
                feed, row["format"] = json_codec.predict_inputs(request, dict(sig.inputs), signature)
                return feed

            _, _, outputs = self.api.predict(name, version, signature, inputs, **_labelled(label))
            return json_codec.encode_predict(outputs, row["format"])
        examples = json_codec.examples_from_json(request)
        if verb == "classify":
            _, _, scores, classes = self.api.classify(name, version, signature, examples, **_labelled(label))
            return json_codec.encode_classify(scores, classes)
        _, _, values = self.api.regress(name, version, signature, examples, **_labelled(label))
        return json_codec.encode_regress(values)


def _labelled(label) -> dict:
    """``label=`` for ``ServingApi`` calls when the route names a version label."""
    return {} if label is None else {"label": label}


# ----------------------------------------------------------------------------- HTTP/1.1 front end
_MAX_HEAD_BYTES = 64 * 1024  # request line + headers (http.server's line limit)
_MAX_HEADERS = 100  # http.client's limit
_MAX_CHUNK_LINE = 1024  # chunk-size line with extensions
_LINGER_SECONDS = 2.0  # after refusing a body: read and drop what the client still sends
_RECV_BYTES = 64 * 1024
_SWEEP_SECONDS = 0.25  # how often expired connections are looked for
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
SERVER_VERSION = "TFServingCompat/1.0"


class _HttpError(Exception):
    """A request refused by the HTTP layer (framing, limits); the connection is closed after it.

    ``linger``: the client may still be sending a body that will not be read, so the server
    reads and drops it for a moment before closing (else the client can get a reset instead
    of the response).
    """

    def __init__(self, code: int, message: str, linger: bool = False):
        super().__init__(message)
        self.code, self.message, self.linger = code, message, linger


class _Timeout(Exception):
    pass


class _Closed(Exception):
    """The client closed its side before the request was complete."""


class _Connection:
    """A client socket and the bytes read from it but not consumed yet."""

    __slots__ = ("sock", "addr", "buf", "deadline", "watched")

    def __init__(self, sock: socket.socket, addr):
        self.sock, self.addr = sock, addr
        self.buf = bytearray()
        self.deadline = 0.0  # while watched: when the next request's head must be complete
        self.watched = False  # registered with the selector (idle or reading a head)

    def fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout()
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(_RECV_BYTES)
        except TimeoutError:  # socket.timeout
            raise _Timeout() from None
        if not data:
            raise _Closed()
        self.buf += data

    def read(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self.fill(deadline)
        with memoryview(self.buf) as view:
            data = bytes(view[:n])
        del self.buf[:n]
        return data

    def readline(self, limit: int, deadline: float) -> bytes:
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > limit:
                raise _HttpError(400, f"Malformed request: a chunked-body line is longer than {limit} bytes")
            start = len(self.buf)
            self.fill(deadline)


def _head_end(buf: bytearray) -> int:
    """Index just past the blank line ending a request head in ``buf``, or -1."""
    ends = [i + 3 for i in (buf.find(b"\n\r\n"),) if i >= 0] + [i + 2 for i in (buf.find(b"\n\n"),) if i >= 0]
    return min(ends) if ends else -1


def _parse_head(block: bytes) -> tuple[str, str, str, dict]:
    """(method, target, version, {lower-case name: [values]}) of a request head."""
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in block.decode("latin-1").split("\n")]
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise _HttpError(400, f"Malformed request line: {lines[0][:200]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        if re.fullmatch(r"HTTP/[0-9]\.[0-9]", version):
            raise _HttpError(505, f"HTTP version {version} is not supported; use HTTP/1.1")
        raise _HttpError(400, f"Malformed request line: {lines[0][:200]!r}")
    headers, count = {}, 0
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise _HttpError(400, "Malformed header: obsolete line folding is not accepted")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise _HttpError(400, f"Malformed header line: {line[:200]!r}")
        count += 1
        if count > _MAX_HEADERS:
            raise _HttpError(431, f"Request has more than {_MAX_HEADERS} header fields")
        headers.setdefault(name.lower(), []).append(value.strip(" \t"))
    return method, target, version, headers


def _tokens(headers: dict, name: str) -> set[str]:
    return {t.strip().lower() for v in headers.get(name, []) for t in v.split(",") if t.strip()}


def _keep_alive(version: str, headers: dict) -> bool:
    tokens = _tokens(headers, "connection")
    if "close" in tokens:
        return False
    return "keep-alive" in tokens if version == "HTTP/1.0" else True


_DATE = [0, ""]  # (second, its Date header value): one formatdate per second


def _date() -> str:
    now = int(time.time())
    if _DATE[0] != now:
        _DATE[:] = [now, formatdate(now, usegmt=True)]
    return _DATE[1]


def _response_bytes(code: int, body: bytes, keep_alive: bool, head_only: bool = False, extra=(),
                    content_type: str | None = JSON_TYPE) -> bytes:
    """The bytes of a response with ``body`` (``Content-Length``; no body for HEAD)."""
    try:
        reason = HTTPStatus(code).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {code} {reason}", f"Server: {SERVER_VERSION}", f"Date: {_date()}",
             *([f"Content-Type: {content_type}"] if content_type else []), f"Content-Length: {len(body)}",
             "Connection: keep-alive" if keep_alive else "Connection: close", *extra]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def _error_bytes(code: int, message: str, keep_alive: bool = False, extra=()) -> bytes:
    """A refusal of the HTTP layer (framing, limits): ``{"error": message}``."""
    return _response_bytes(code, _error_body(message), keep_alive, extra=extra)


def check_limits(max_body_bytes: int, header_timeout_seconds: float, body_timeout_seconds: float,
                 worker_threads: int, max_connections: int) -> None:
    """ValueError naming the first limit out of range (the ``serving.*`` config keys check the same)."""
    for name, value in (("max_body_bytes", max_body_bytes), ("worker_threads", worker_threads),
                        ("max_connections", max_connections)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1. Received: {name}={value}")
    for name, value in (("header_timeout_seconds", header_timeout_seconds),
                        ("body_timeout_seconds", body_timeout_seconds)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0. Received: {name}={value}")


class RestServer:
    """TF Serving's REST API on (host, port); port 0 picks a free one.

    One thread multiplexes every connection while it is idle or its request head (request
    line and headers) is arriving; a request whose head is complete goes to a pool of
    ``worker_threads`` threads, which read its body, run it and write the response. So idle
    keep-alive connections and slow or half-open clients cost no thread, and the threads
    never exceed ``worker_threads`` + 1.

    Limits (all refusals are ``{"error": ...}`` JSON, and close the connection):
      max_body_bytes: a larger body (``Content-Length`` or chunked total) is answered 413
        before (or as soon as) it exceeds the limit; it is never buffered.
      header_timeout_seconds: an idle keep-alive connection, or a request head that has not
        fully arrived, is closed after this long (408 when a request had begun).
      body_timeout_seconds: the body must have arrived this long after the head (else 408);
        also the time a response may take to be written.
      worker_threads: requests in progress at once; complete heads beyond it wait in order.
      max_connections: open connections; a new one beyond it first closes the longest-idle
        keep-alive connection, and if none is idle is answered 503 and closed.
    Malformed framing (request line, headers, ``Content-Length``, chunked encoding) is a 400;
    ``Transfer-Encoding: chunked`` request bodies are read; other transfer codings are 501.
    """

    def __init__(self, api, host: str = "127.0.0.1", port: int = 8501, *, max_body_bytes: int = 4 << 20,
                 header_timeout_seconds: float = 10.0, body_timeout_seconds: float = 30.0,
                 worker_threads: int = 16, max_connections: int = 256):
        check_limits(max_body_bytes, header_timeout_seconds, body_timeout_seconds, worker_threads, max_connections)
        self.rest = RestHandler(api)
        self.max_body_bytes = max_body_bytes
        self.header_timeout = header_timeout_seconds
        self.body_timeout = body_timeout_seconds
        self.max_connections = max_connections
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._pool = ThreadPoolExecutor(worker_threads, thread_name_prefix="rest-worker")
        self._returned: queue.SimpleQueue = queue.SimpleQueue()  # (connection, keep_alive) from workers
        self._lock = threading.Condition()
        self._conns: set[_Connection] = set()  # every open connection (selector thread adds, closes)
        self._in_progress = 0  # connections handed to the pool and not handed back yet
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.refused = 0  # connections answered 503 (max_connections)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "RestServer":
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="rest", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace: float = 2.0) -> None:
        """Stops accepting, lets requests in progress finish for up to ``grace`` s, closes all."""
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            self._lock.wait_for(lambda: self._in_progress == 0, timeout=grace)
            conns = list(self._conns)
        for c in conns:  # unblocks a worker still reading a slow body
            with contextlib.suppress(OSError):
                c.sock.shutdown(socket.SHUT_RDWR)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            c.sock.close()
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()
        self._selector.close()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    # ------------------------------------------------------------------ the selector thread
    def _run(self) -> None:
        next_sweep = time.monotonic() + _SWEEP_SECONDS
        while not self._stopping.is_set():
            try:
                events = self._selector.select(timeout=_SWEEP_SECONDS)
                for key, _ in events:
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            while self._wake_r.recv(4096):
                                pass
                    else:
                        self._on_readable(key.data)
                self._take_back()
                if time.monotonic() >= next_sweep:
                    self._expire()
                    next_sweep = time.monotonic() + _SWEEP_SECONDS
            except Exception:  # noqa: BLE001  (the listener must keep running)
                log.exception("REST connection loop error")
                time.sleep(0.05)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: a wake-up is pending anyway
            self._wake_w.send(b"x")

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. out of file descriptors: back off, keep serving the rest
                log.warning("REST accept failed: %s", e)
                time.sleep(0.05)
                return
            with self._lock:
                full = len(self._conns) >= self.max_connections
            if full and not self._evict_idle():
                self._refuse(sock)
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one write per response
            conn = _Connection(sock, addr)
            with self._lock:
                self._conns.add(conn)
            self._watch(conn)

    def _evict_idle(self) -> bool:
        """Closes the longest-idle keep-alive connection (no partial request); False if none."""
        idle = [k.data for k in self._selector.get_map().values()
                if isinstance(k.data, _Connection) and not k.data.buf]
        if not idle:
            return False
        self._close(min(idle, key=lambda c: c.deadline))
        return True

    def _refuse(self, sock: socket.socket) -> None:
        self.refused += 1
        try:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.recv(_RECV_BYTES)  # what already arrived, so closing does not reset before the 503 is read
            sock.send(_error_bytes(503, f"Too many connections (serving.max_connections={self.max_connections}); "
                                        "retry later", extra=("Retry-After: 1",)))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            sock.close()

    def _watch(self, conn: _Connection) -> None:
        """Waits (in the selector) for ``conn``'s next request head, unless it is already buffered."""
        conn.deadline = time.monotonic() + self.header_timeout
        conn.sock.setblocking(False)
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        conn.watched = True
        self._check_head(conn)

    def _on_readable(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.buf += data
        self._check_head(conn)

    def _check_head(self, conn: _Connection) -> None:
        blank = len(conn.buf) - len(conn.buf.lstrip(b"\r\n"))
        if blank:  # empty lines before a request line are ignored (RFC 9112 2.2)
            del conn.buf[:blank]
        end = _head_end(conn.buf)
        if end < 0 and len(conn.buf) <= _MAX_HEAD_BYTES:
            return
        if end < 0 or end > _MAX_HEAD_BYTES:
            self._reject(conn, 431, f"Request line and headers are larger than {_MAX_HEAD_BYTES} bytes")
            return
        self._selector.unregister(conn.sock)
        conn.watched = False
        conn.sock.setblocking(True)
        with self._lock:
            self._in_progress += 1
        try:
            self._pool.submit(self._serve, conn)
        except RuntimeError:  # the pool is shut down: stopping
            with self._lock:
                self._in_progress -= 1
            self._close(conn)

    def _take_back(self) -> None:
        while True:
            try:
                conn, keep = self._returned.get_nowait()
            except queue.Empty:
                return
            if keep and not self._stopping.is_set():
                try:
                    self._watch(conn)
                except (OSError, ValueError):  # ValueError: the socket is already closed
                    self._close(conn)
            else:
                self._close(conn)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in list(self._selector.get_map().values()):
            conn = key.data
            if isinstance(conn, _Connection) and conn.deadline <= now:
                if conn.buf:  # a request had begun
                    self._reject(conn, 408, f"Timed out waiting for the request headers "
                                            f"(serving.header_timeout_seconds={self.header_timeout:g})")
                else:
                    self._close(conn)

    def _reject(self, conn: _Connection, code: int, message: str) -> None:
        """Answers from the selector thread (non-blocking, best effort) and closes."""
        try:
            conn.sock.setblocking(False)
            conn.sock.send(_error_bytes(code, message))
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._close(conn)

    def _close(self, conn: _Connection) -> None:
        if conn.watched:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
            conn.watched = False
        with self._lock:
            self._conns.discard(conn)
        conn.sock.close()

    # ------------------------------------------------------------------ worker threads
    def _serve(self, conn: _Connection) -> None:
        keep = False
        try:
            keep = self._serve_one(conn)
        except (_Closed, _Timeout, OSError):
            keep = False
        except Exception:  # noqa: BLE001  (one connection's failure must not stop the worker)
            log.exception("REST connection from %s failed", conn.addr)
            keep = False
        finally:
            with self._lock:
                self._in_progress -= 1
                self._lock.notify_all()
            self._returned.put((conn, keep))
            self._wake()

    def _serve_one(self, conn: _Connection) -> bool:
        end = _head_end(conn.buf)
        head = bytes(conn.buf[:end])
        del conn.buf[:end]
        deadline = time.monotonic() + self.body_timeout
        try:
            method, target, version, headers = _parse_head(head)
            length = self._framing(version, headers)
            if length != 0 and "100-continue" in _tokens(headers, "expect") and version == "HTTP/1.1":
                conn.sock.settimeout(self.body_timeout)
                conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = self._read_chunked(conn, deadline) if length is None else conn.read(length, deadline)
        except _HttpError as e:
            self._send(conn, _error_bytes(e.code, e.message))
            if e.linger:
                self._linger(conn)
            return False
        except _Timeout:
            self._send(conn, _error_bytes(408, f"Timed out reading the request body "
                                               f"(serving.body_timeout_seconds={self.body_timeout:g})"))
            return False
        keep = _keep_alive(version, headers) and not self._stopping.is_set()
        reply = self.rest.respond(method, target, body, headers)
        self._send(conn, _response_bytes(reply.code, reply.body, keep, method == "HEAD",
                                         content_type=reply.content_type))
        log.debug("%s %s %s %d", conn.addr[0], method, target, reply.code)
        return keep

    def _framing(self, version: str, headers: dict) -> int | None:
        """The body length from ``Content-Length``, or None for a chunked body; checks the limit."""
        unsupported = _tokens(headers, "expect") - {"100-continue"}
        if unsupported:
            raise _HttpError(417, f"Expectation {sorted(unsupported)} is not supported", linger=True)
        if "transfer-encoding" in headers:
            if "content-length" in headers:
                raise _HttpError(400, "Malformed request: both Transfer-Encoding and Content-Length are set",
                                 linger=True)
            codings = [t.strip().lower() for v in headers["transfer-encoding"] for t in v.split(",") if t.strip()]
            if codings != ["chunked"] or version == "HTTP/1.0":
                raise _HttpError(501 if version == "HTTP/1.1" else 400,
                                 f"Transfer-Encoding {', '.join(codings) or '(empty)'} is not supported; "
                                 "only chunked", linger=True)
            return None
        values = {t.strip() for v in headers.get("content-length", []) for t in v.split(",")}
        if not values:
            return 0
        if len(values) != 1 or not _CONTENT_LENGTH.fullmatch(next(iter(values))):
            raise _HttpError(400, f"Malformed Content-Length: {', '.join(headers['content-length'])[:100]!r}",
                             linger=True)
        length = int(next(iter(values)))
        if length > self.max_body_bytes:
            raise _HttpError(413, self._too_large(f"{length} bytes"), linger=True)
        return length

    def _too_large(self, what: str) -> str:
        return (f"Request body of {what} is larger than the limit of {self.max_body_bytes} bytes "
                "(serving.max_body_bytes)")

    def _read_chunked(self, conn: _Connection, deadline: float) -> bytes:
        parts, total = [], 0
        while True:
            line = conn.readline(_MAX_CHUNK_LINE, deadline)
            size = line.split(b";", 1)[0].strip(b" \t\r\n")
            if not _CHUNK_SIZE.fullmatch(size):
                raise _HttpError(400, f"Malformed chunked body: bad chunk size line {line[:40]!r}", linger=True)
            n = int(size, 16)
            if n == 0:
                break
            total += n
            if total > self.max_body_bytes:
                raise _HttpError(413, self._too_large(f"more than {self.max_body_bytes} bytes (chunked)"),
                                 linger=True)
            parts.append(conn.read(n, deadline))
            if conn.readline(2, deadline) not in (b"\r\n", b"\n"):
                raise _HttpError(400, "Malformed chunked body: a chunk is not followed by CRLF", linger=True)
        trailers = 0
        while True:  # trailer fields, ignored
            line = conn.readline(_MAX_HEAD_BYTES, deadline)
            if line in (b"\r\n", b"\n"):
                return b"".join(parts)
            trailers += len(line)
            if trailers > _MAX_HEAD_BYTES:
                raise _HttpError(431, f"Chunked trailer fields are larger than {_MAX_HEAD_BYTES} bytes")

    def _send(self, conn: _Connection, data: bytes) -> None:
        conn.sock.settimeout(self.body_timeout)
        conn.sock.sendall(data)

    def _linger(self, conn: _Connection) -> None:
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            end = time.monotonic() + _LINGER_SECONDS
            while (remaining := end - time.monotonic()) > 0:
                conn.sock.settimeout(remaining)
                if not conn.sock.recv(_RECV_BYTES):
                    break
        except OSError:
            pass
