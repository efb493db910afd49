"""A test double's HTTP server on a free loopback port, served from a
daemon thread (the fault relays, the recorder and the Vault fault proxy)."""

from __future__ import annotations

import http.server
import threading


def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Starts `handler` on 127.0.0.1; returns the server (`shutdown()` stops it) and its endpoint."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
