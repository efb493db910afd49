"""Records what the proxy sends upstream, answering like a minimal S3 for
writes. Used to check request shapes that need a real cloud to verify
(GCS), where only the shape can be checked here."""

from __future__ import annotations

import http.server

import local_http


class Recorder:
    def __init__(self):
        self.requests: list[dict] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.requests.append({"method": self.command, "path": self.path,
                                          "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                meta = []
                if self.command == "POST" and "uploads" in self.path:
                    # The completed object carries its upload's metadata (HEAD below).
                    recorder.upload_meta = [(k, v) for k, v in self.headers.items()
                                            if k.lower().startswith("x-amz-meta-")]
                    out = b"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>up-1</UploadId></InitiateMultipartUploadResult>"
                elif self.command == "GET" and "range" in {k.lower() for k in self.headers}:
                    # The seal's ranged reads of the completed object's stream
                    # headers: the parts in order, as S3 stores them.
                    whole = b"".join(recorder.parts[n] for n in sorted(recorder.parts))
                    first, last = self.headers["Range"].removeprefix("bytes=").split("-")
                    first, last = int(first), min(int(last), len(whole) - 1)
                    out = whole[first : last + 1]
                    self.send_response(206)
                    self.send_header("ETag", '"mp-1"')
                    self.send_header("Content-Range", f"bytes {first}-{last}/{len(whole)}")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                elif self.command == "GET" and "uploadId" in self.path:
                    out = (b"<ListPartsResult><IsTruncated>false</IsTruncated>"
                           b"<Part><PartNumber>1</PartNumber><ETag>\"0123456789abcdef0123456789abcdef\"</ETag><Size>%d</Size></Part></ListPartsResult>"
                           % recorder.last_part_size)
                elif self.command == "POST" and "uploadId" in self.path:
                    out = b"<CompleteMultipartUploadResult><ETag>\"mp-1\"</ETag></CompleteMultipartUploadResult>"
                elif self.command == "PUT" and "x-amz-copy-source" in self.headers:
                    out = b"<CopyObjectResult><ETag>\"sealed-1\"</ETag></CopyObjectResult>"
                elif self.command == "HEAD":
                    meta, out = recorder.upload_meta, b""
                else:
                    out = b""
                if self.command == "PUT" and "partNumber" in self.path:
                    recorder.last_part_size = len(body)
                    number = int(self.path.split("partNumber=")[1].split("&")[0])
                    recorder.parts[number] = body
                self.send_response(200)
                self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
                for k, v in meta:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def log_message(self, *args):
                pass

        self.last_part_size = 0
        self.parts: dict[int, bytes] = {}
        self.upload_meta: list[tuple[str, str]] = []
        self.server, self.endpoint = local_http.serve(Handler)

    def close(self):
        self.server.shutdown()
