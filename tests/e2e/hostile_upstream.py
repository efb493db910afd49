"""A hostile upstream: an HTTP relay to the real upstream (s3s-fs) that
answers chosen requests itself, with statuses, headers and bodies the proxy
did not ask for. It plays someone who controls the storage endpoint (or
holds its credentials and a way in front of it). Everything else passes byte
for byte, Host included, so the proxy's signatures still verify against
s3s-fs. It records every request it receives, so a test can tell what the
proxy forwarded."""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable

import local_http


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Forged:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


# A rule looks at a request (method, path, lower-cased headers) and returns
# the answer to forge, or None to relay it.
Rule = Callable[[str, str, dict[str, str]], "Forged | None"]


@dataclass
class Hold:
    """Holds the first request `matches` accepts (its body already read)
    until `release()`, then relays or forges it as usual: the window in
    which a test lets another writer act. `arrived` is set when it is held."""

    matches: Callable[[str, str, dict[str, str]], bool]
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


def forward(handler: http.server.BaseHTTPRequestHandler, target: urllib.parse.SplitResult, body: bytes) -> bytes | None:
    """Sends `handler`'s request to `target` as it came and answers with the
    upstream's status and headers (Content-Length recomputed); returns the
    body for the caller to write as it likes (None for a HEAD)."""
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
    conn.putrequest(handler.command, handler.path, skip_host=True, skip_accept_encoding=True)
    for k, v in handler.headers.items():
        conn.putheader(k, v)
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    handler.send_response(resp.status, resp.reason)
    # A HEAD's Content-Length is the object's, not the (empty) body's.
    head = handler.command == "HEAD"
    dropped = ("transfer-encoding", "connection") if head else ("content-length", "transfer-encoding", "connection")
    for k, v in resp.getheaders():
        if k.lower() not in dropped:
            handler.send_header(k, v)
    if not head:
        handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    return None if head else data


class HostileUpstream:
    def __init__(self, upstream: str):
        target = urllib.parse.urlsplit(upstream)
        self.rules: list[Rule] = []
        self.holds: list[Hold] = []
        self.seen: list[Seen] = []
        self.forged = 0
        lock = threading.Lock()
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with lock:
                    relay.seen.append(Seen(self.command, self.path, headers))
                    rules = list(relay.rules)
                    held = next((h for h in relay.holds if not h.arrived.is_set()
                                 and h.matches(self.command, self.path, headers)), None)
                    if held is not None:
                        held.arrived.set()
                if held is not None:
                    held.released.wait(timeout=120)
                for rule in rules:
                    forged = rule(self.command, self.path, headers)
                    if forged is not None:
                        with lock:
                            relay.forged += 1
                        self.send_response(forged.status)
                        names = {k.lower() for k, _ in forged.headers}
                        for k, v in forged.headers:
                            self.send_header(k, v)
                        if "content-length" not in names:
                            self.send_header("Content-Length", str(len(forged.body)))
                        self.end_headers()
                        if self.command != "HEAD":
                            self.wfile.write(forged.body)
                        return
                data = forward(self, target, body)
                if data is not None:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def log_message(self, *args):
                pass

        self.server, self.endpoint = local_http.serve(Handler)

    def forge(self, rule: Rule) -> None:
        self.rules.append(rule)

    def hold(self, matches: Callable[[str, str, dict[str, str]], bool]) -> Hold:
        """Holds the next request `matches` accepts until the hold is released."""
        h = Hold(matches)
        self.holds.append(h)
        return h

    def reset(self) -> None:
        for h in self.holds:
            h.release()
        self.holds.clear()
        self.rules.clear()
        self.seen.clear()
        self.forged = 0

    def close(self) -> None:
        for h in self.holds:
            h.release()
        self.server.shutdown()
