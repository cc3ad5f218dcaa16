"""The Prometheus client keeps one connection per thread alive, and a connection the server closed is
retried afresh (a local HTTP server stands in for the query API's transport only; the integration tests
query a real Prometheus)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgeweave.telemetry.prometheus import PrometheusClient, TelemetryError

VECTOR = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {"namespace": "a"}, "value": [1700000000.0, "2.5"]}]}}


class _Server:
    def __init__(self, close_after: int = 0, status: int = 200) -> None:
        self.connections = 0
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                outer.connections += 1
                super().setup()

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.requests += 1
                body = json.dumps(VECTOR if status == 200 else {"status": "error", "error": "bad"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if close_after and outer.requests % close_after == 0:
                    self.close_connection = True

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_queries_share_one_kept_alive_connection() -> None:
    srv = _Server()
    try:
        client = PrometheusClient(srv.url)
        for _ in range(5):
            res = client.query("up")
            assert res.samples[0].value == 2.5 and res.samples[0].labels == {"namespace": "a"}
        assert srv.requests == 5 and srv.connections == 1
    finally:
        srv.close()


def test_a_connection_the_server_closed_is_opened_again() -> None:
    srv = _Server(close_after=1)
    try:
        client = PrometheusClient(srv.url)
        for _ in range(3):
            assert client.query("up").samples
        assert srv.requests == 3 and srv.connections == 3
    finally:
        srv.close()


def test_an_error_status_is_a_query_failure_and_a_dead_server_unavailable() -> None:
    srv = _Server(status=400)
    try:
        with pytest.raises(TelemetryError) as err:
            PrometheusClient(srv.url).query("up{")
        assert err.value.reason == "QueryFailed" and "400" in str(err.value)
    finally:
        srv.close()
    with pytest.raises(TelemetryError) as err:
        PrometheusClient(srv.url, timeout=1.0).query("up")
    assert err.value.reason == "PrometheusUnavailable"
