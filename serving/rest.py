"""TF Serving's REST API (the subset this server offers), on stdlib ``ThreadingHTTPServer``.

Routes (TF Serving's ``http_rest_api_handler``):

  GET  /v1/models/NAME[/versions/V]                  model version status
  GET  /v1/models/NAME[/versions/V]/metadata         signature defs
  POST /v1/models/NAME[/versions/V]:predict          {"signature_name", "instances" | "inputs"}
  POST /v1/models/NAME[/versions/V]:classify         {"signature_name", "context", "examples"}
  POST /v1/models/NAME[/versions/V]:regress          {"signature_name", "context", "examples"}

Every request goes through ``RestHandler.dispatch``; every failure becomes
``{"error": message}`` in ``_error_response`` with the HTTP code from
``serving.status.CODES`` (400 invalid argument, 404 not found, ...); the server keeps running.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format

from serving import json_codec
from serving.status import INTERNAL, RequestError, invalid

log = logging.getLogger("serving.rest")

_MODEL = r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
ROUTES = [
    ("GET", re.compile(_MODEL + r"$"), "status"),
    ("GET", re.compile(_MODEL + r"/metadata$"), "metadata"),
    ("POST", re.compile(_MODEL + r":(?P<verb>predict|classify|regress)$"), "infer"),
]


class RestHandler:
    """Maps (method, path, body) to (HTTP code, JSON object) over a ``ServingApi``."""

    def __init__(self, api):
        self.api = api

    def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        try:
            for route_method, pattern, action in ROUTES:
                m = pattern.match(path.split("?", 1)[0])
                if m and route_method == method:
                    name, version = m.group("name"), m.group("version")
                    version = int(version) if version is not None else None
                    if action == "status":
                        return 200, self._status(name, version)
                    if action == "metadata":
                        return 200, self._metadata(name, version)
                    return 200, self._infer(m.group("verb"), name, version, _parse_json(body))
            raise invalid(f"Malformed request: {method} {path}")
        except RequestError as e:
            return _error_response(e)
        except Exception as e:  # noqa: BLE001  (shape every failure; the server keeps running)
            log.exception("internal error on %s %s", method, path)
            return _error_response(RequestError(INTERNAL, f"{type(e).__name__}: {e}"))

    def _status(self, name, version) -> dict:
        return {"model_version_status": [
            {"version": str(s["version"]), "state": s["state"],
             "status": {"error_code": "UNKNOWN" if s["error"] else "OK", "error_message": s["error"]}}
            for s in self.api.status(name, version)]}

    def _metadata(self, name, version) -> dict:
        v, defs = self.api.metadata(name, version)
        signature_def = {k: json_format.MessageToDict(d, preserving_proto_field_name=True) for k, d in defs.items()}
        return {"model_spec": {"name": name, "signature_name": "", "version": str(v)},
                "metadata": {"signature_def": {"signature_def": signature_def}}}

    def _infer(self, verb: str, name: str, version, body: dict) -> dict:
        signature = body.get("signature_name", "")
        if not isinstance(signature, str):
            raise invalid("'signature_name' must be a string")
        if verb == "predict":
            row = {}

            def inputs(sig):
                feed, row["format"] = json_codec.predict_inputs(body, list(sig.inputs))
                return feed

            _, _, outputs = self.api.predict(name, version, signature, inputs)
            return json_codec.predict_response(outputs, row["format"])
        examples = json_codec.examples_from_json(body)
        if verb == "classify":
            _, _, scores, classes = self.api.classify(name, version, signature, examples)
            labels = json_codec.encode_array("classes", classes)
            return {"results": [[[c, float(s)] for c, s in zip(cs, ss)] for cs, ss in zip(labels, scores.tolist())]}
        _, _, values = self.api.regress(name, version, signature, examples)
        return {"results": values.tolist()}


def _parse_json(body: bytes) -> dict:
    try:
        obj = json.loads(body.decode("utf-8") if body else "")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise invalid(f"JSON Parse error: {e}") from None
    except RecursionError:  # e.g. 100,000 nested arrays: a bad request, not a server fault
        raise invalid("JSON Parse error: the request nests arrays or objects too deeply") from None
    if not isinstance(obj, dict):
        raise invalid("JSON Parse error: the request body must be a JSON object")
    return obj


def _error_response(e: RequestError) -> tuple[int, dict]:
    return e.http_code, {"error": e.message}


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "TFServingCompat/1.0"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the 40 ms delayed-ACK stall

    def _respond(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        code, obj = self.server.rest.dispatch(method, self.path, body)
        data = json.dumps(obj).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802  (http.server's naming)
        self._respond("GET")

    def do_POST(self):  # noqa: N802
        self._respond("POST")

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)


class RestServer:
    """``ThreadingHTTPServer`` on (host, port) answering TF Serving REST requests; port 0 picks one."""

    def __init__(self, api, host: str = "127.0.0.1", port: int = 8501):
        self.httpd = ThreadingHTTPServer((host, port), _HttpHandler)
        self.httpd.daemon_threads = True
        self.httpd.rest = RestHandler(api)
        self.port = self.httpd.server_address[1]
        self._thread = None

    def start(self) -> "RestServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="rest", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
