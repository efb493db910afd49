"""A fault-injecting stand-in placed in front of a real OpenBao, only for
the faults OpenBao cannot produce on demand: 5xx, 429, hangs, and a token
that stops working mid-flight. In `pass` mode it forwards every call."""

from __future__ import annotations

import http.server
import time
import urllib.error
import urllib.request

import local_http


class VaultFaults:
    def __init__(self, target: str):
        self.target = target
        self.mode = "pass"
        self.reject_next = 0
        # Calls whose path contains this get 503 whatever the mode ("": none).
        self.fail_matching = ""
        self.calls: list[str] = []
        faults = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                faults.calls.append(self.path)
                if faults.mode == "hang":
                    time.sleep(30)
                    return
                if faults.fail_matching and faults.fail_matching in self.path:
                    return self._reply(503, b'{"errors":["injected fault"]}')
                if faults.mode in ("503", "500", "429"):
                    return self._reply(int(faults.mode), b'{"errors":["injected fault"]}')
                if faults.reject_next and "/transit/" in self.path:
                    faults.reject_next -= 1
                    return self._reply(403, b'{"errors":["permission denied"]}')
                req = urllib.request.Request(faults.target + self.path, data=body, method=self.command)
                for name in ("X-Vault-Token", "X-Vault-Namespace", "Content-Type", "X-Vault-Request"):
                    if self.headers.get(name):
                        req.add_header(name, self.headers[name])
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        self._reply(r.status, r.read())
                except urllib.error.HTTPError as e:
                    self._reply(e.code, e.read())

            def _reply(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args):
                pass

        self.server, self.addr = local_http.serve(Handler)

    def close(self):
        self.server.shutdown()
