"""``GET /metrics`` and ``GET /healthz`` over plain HTTP, for Prometheus and load balancers.

A small threaded :mod:`http.server` beside the asyncio loop: scrapes are rare
and cheap, and a thread keeps them off the relay's loop. Bound to
``[metrics] address`` (loopback by default). ``/healthz`` answers 200 with a
JSON body while the node's lanes listen and its database answers, 503
otherwise, so a load balancer stops sending logins to a node that could not
record them; also 503 while the node drains (``pamgate node drain``), so the
balancer sends new logins elsewhere while its live sessions finish.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gateway.domain.metrics import GatewayMetrics
from gateway.errors import PamgateError

logger = logging.getLogger("pamgate.metrics")

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class MetricsEndpoint:
    """Serves one node's metrics and health until :meth:`stop`."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        node: str,
        ping_database: Callable[[], None],
        lanes_listening: Callable[[], bool],
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self._metrics = metrics
        self._node = node
        self._ping = ping_database
        self._listening = lanes_listening
        self._draining = draining
        self._server: ThreadingHTTPServer | None = None

    def start(self, address: str, port: int) -> None:
        """Listen (OSError if the address is taken) and serve in a daemon thread."""
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path == "/metrics":
                    self._reply(200, PROMETHEUS_TEXT, endpoint._metrics.exposition())
                elif self.path == "/healthz":
                    status, body = endpoint.health()
                    self._reply(status, "application/json", json.dumps(body).encode() + b"\n")
                else:
                    self._reply(404, "text/plain", b"not found: try /metrics or /healthz\n")

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # a scrape every few seconds is not news for the gateway log

        self._server = ThreadingHTTPServer((address, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="metrics-endpoint", daemon=True
        ).start()
        logger.info("metrics on http://%s:%d/metrics (health: /healthz)", address, port)

    def health(self) -> tuple[int, dict[str, object]]:
        """(HTTP status, body) of ``/healthz``."""
        body: dict[str, object] = {"node": self._node}
        started = time.perf_counter()
        try:
            self._ping()
            body["database_ms"] = round((time.perf_counter() - started) * 1000, 1)
        except PamgateError as exc:
            body.update(status="unhealthy", problem=f"database: {exc}")
            return 503, body
        if not self._listening():
            body.update(status="unhealthy", problem="the lanes are not listening")
            return 503, body
        if self._draining():
            body.update(status="draining", problem="the node is draining: no new sessions")
            return 503, body
        body["status"] = "ok"
        return 200, body

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
