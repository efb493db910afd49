#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/corpus/<target>/.

Only needed to regenerate the seeds (the files are committed); it needs
python3 with `cryptography` and `PyYAML`. Each seed is a small meaningful
input in the layout its target documents at the top of
fuzz_targets/<target>.rs. The encrypted streams are real CloudTaser format v1
ciphertext (docs/FORMAT.md) under the fuzz targets' fixed key, byte for byte
what `format::Sealer` writes.
"""

import base64
import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"
GOLDEN = ROOT.parent / "operator" / "tests" / "golden"
KEY = bytes([0x42]) * 32
SEGMENT = 1 << 16


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# --- aws_chunked: [split, pick] + body -------------------------------------
def chunked(plain, chunk, ext="", trailers=()):
    out = b""
    for i in range(0, len(plain), chunk):
        c = plain[i : i + chunk]
        out += f"{len(c):x}{ext}\r\n".encode() + c + b"\r\n"
    out += f"0{ext}\r\n".encode()
    for t in trailers:
        out += t.encode() + b"\r\n"
    return out + b"\r\n"


def aws_chunked():
    hello = b"hello world"
    crc32 = base64.b64encode(zlib.crc32(hello).to_bytes(4, "big")).decode()
    sha256 = base64.b64encode(hashlib.sha256(hello).digest()).decode()
    sig = ";chunk-signature=" + "a" * 64
    write("aws_chunked", "unsigned-trailer-crc32", bytes([3, 1]) + chunked(hello, 5, trailers=[f"x-amz-checksum-crc32:{crc32}"]))
    write("aws_chunked", "signed-chunks", bytes([1, 0]) + chunked(hello, 4, ext=sig))
    write(
        "aws_chunked",
        "signed-trailer-sha256",
        bytes([2, 5]) + chunked(hello, 11, ext=sig, trailers=[f"x-amz-checksum-sha256:{sha256}", "x-amz-trailer-signature:" + "b" * 64]),
    )
    write("aws_chunked", "empty", bytes([0, 2]) + b"0\r\n\r\n")
    write("aws_chunked", "bare-lf", bytes([1, 3]) + b"3\nabc\r\n0\n\n")
    # A trailer line just under the 4096-byte line limit, split byte by byte.
    write("aws_chunked", "long-trailer-line", bytes([0, 0]) + b"0\r\nx-amz-meta-a:" + b"a" * 4082 + b"\r\n\r\n")


# --- stream_opener: [mode] + stored bytes, or [mode>=128] + round-trip spec --
def header(part, length, salt):
    return b"CTS3" + bytes([1, 16, 0, 0]) + struct.pack(">IQ", part, length) + salt


def seal(plain, part, salt):
    h = header(part, len(plain), salt)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"cloudtaser-s3 v1 segment key").derive(KEY)
    aead = AESGCM(key)
    segments = max(1, -(-len(plain) // SEGMENT))
    out = h
    for i in range(segments):
        nonce = bytes(7) + struct.pack(">I", i) + bytes([1 if i == segments - 1 else 0])
        out += aead.encrypt(nonce, plain[i * SEGMENT : (i + 1) * SEGMENT], h)
    return out


def stream_opener():
    salt = bytes(range(32))
    write("stream_opener", "single-empty", bytes([0]) + seal(b"", 0, salt))
    write("stream_opener", "single-hello", bytes([2]) + seal(b"hello world", 0, salt))
    write("stream_opener", "part1-100", bytes([1]) + seal(bytes(range(100)), 1, salt))
    # Two whole segments and one byte: crosses a segment boundary.
    write("stream_opener", "single-2seg", bytes([6]) + seal(bytes(i % 251 for i in range(SEGMENT + 1)), 0, salt))
    # Multipart: parts of 10, 10 and 5 bytes numbered 1..3.
    parts = [seal(b"0123456789", 1, salt), seal(b"abcdefghij", 2, bytes(32)), seal(b"klmno", 3, bytes([9]) * 32)]
    write("stream_opener", "multipart-3", bytes([5]) + b"".join(parts))
    # Round trips: [mode, l0, l1, l2, flip0, flip1, flip2, cut] + plaintext pattern.
    write("stream_opener", "roundtrip-small", bytes([0x80, 11, 0, 0, 3, 0, 1, 1]) + b"hello world")
    write("stream_opener", "roundtrip-boundary", bytes([0x81, 0x01, 0x00, 0x01, 0xff, 0x10, 0x02, 2]) + b"pattern")
    write("stream_opener", "roundtrip-empty", bytes([0x82, 0, 0, 0, 0, 0, 0, 3]))


# --- xml: [mode] + document ------------------------------------------------
def ct_len(n):
    return 52 + n + 16 * max(1, -(-n // SEGMENT))


def xml():
    ns = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    write(
        "xml",
        "create-multipart",
        bytes([0]) + f'<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult {ns}><Bucket>b</Bucket><Key>k</Key><UploadId>2~abc.def</UploadId><ChecksumAlgorithm>CRC32</ChecksumAlgorithm></InitiateMultipartUploadResult>'.encode(),
    )
    write(
        "xml",
        "list-parts",
        bytes([1]) + f'<ListPartsResult {ns}><Bucket>b</Bucket><UploadId>up</UploadId><IsTruncated>false</IsTruncated><Part><PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag><Size>{ct_len(5 << 20)}</Size><ChecksumCRC32>x==</ChecksumCRC32></Part><Part><PartNumber>2</PartNumber><Size>{ct_len(7)}</Size></Part></ListPartsResult>'.encode(),
    )
    write(
        "xml",
        "copy-result",
        bytes([2]) + b'<CopyObjectResult><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>"9b2cf535f27731c974343645a3985328"</ETag><ChecksumCRC32C>abc=</ChecksumCRC32C></CopyObjectResult>',
    )
    write(
        "xml",
        "complete",
        bytes([3]) + f'<CompleteMultipartUpload {ns}><Part><PartNumber>1</PartNumber><ETag>"a"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>"b"</ETag></Part></CompleteMultipartUpload>'.encode(),
    )
    write(
        "xml",
        "listing",
        bytes([4]) + f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult {ns}><Name>b</Name><Contents><Key>a&amp;b</Key><ETag>&quot;abc&quot;</ETag><Size>{ct_len(1000)}</Size></Contents><Contents><Key>mp</Key><ETag>&quot;abc-3&quot;</ETag><Size>{2 * ct_len(1 << 20) + ct_len(10)}</Size></Contents><Contents><Key>odd</Key><Size>3</Size></Contents></ListBucketResult>'.encode(),
    )
    write("xml", "error-doc", bytes([0x84]) + b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>gone</Message></Error>')
    write("xml", "etag-text", bytes([5]) + b'"9dd4e461268c8034f5c8564e155c67a6"')
    write("xml", "resource-text", bytes([5]) + b"/bucket/a<b>&'\"c")


# --- upload_id -------------------------------------------------------------
def b64(s):
    return base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")


def upload_id():
    write("upload_id", "ours", f"ctu1.{b64('orders')}.{b64('vault:v1:abc+/=')}.2~upstream.id-with.dots")
    write("upload_id", "foreign", "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA")
    write("upload_id", "fields", "upstream\0eu.key\0vault:v3:abc")
    write("upload_id", "prefix-only", "ctu1.")


# --- range: 8 bytes of length + header value --------------------------------
def range_():
    for name, length, value in [
        ("closed", 1000 << 1 | 1, "bytes=0-9"),
        ("open", 20, "bytes=5-"),
        ("suffix", 100 << 1 | 1, "bytes=-5"),
        ("multi", 10, "bytes=0-1,4-5"),
        ("content-range", 0, "bytes 0-9/100"),
        ("unsatisfied", 6, "bytes */1000"),
    ]:
        write("range", name, struct.pack("<Q", length) + value.encode())


# --- admission -------------------------------------------------------------
CASES = [
    "bad-override-denied",
    "gcs-hmac-multi-container",
    "hostnetwork-denied",
    "irsa-eks-ran-first",
    "missing-config-denied",
    "pod-identity",
    "static-classic",
    "static-native",
    "unannotated-untouched",
]


def review(pod, namespace):
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": False,
        },
    }


def admission():
    for i, case in enumerate(CASES):
        config = yaml.safe_load((GOLDEN / case / "config.yaml").read_text())
        pod = yaml.safe_load((GOLDEN / case / "input.yaml").read_text())
        classic = 0x20 if case == "static-classic" else 0
        compact = lambda v: json.dumps(v, separators=(",", ":")).encode()
        # Mode 0: a whole review; mode 1: the pod alone.
        write("admission", f"review-{case}", bytes([i | classic]) + compact(review(pod, config["namespace"])))
        if case in ("gcs-hmac-multi-container", "irsa-eks-ran-first", "static-native"):
            write("admission", f"pod-{case}", bytes([0x40 | i | classic]) + compact(pod))
    # Mode 2: merge patches onto golden pods.
    patches = [
        (7, 7, {"metadata": {"annotations": {"cloudtaser.io/s3-proxy-cpu-request": "100m", "cloudtaser.io/s3-proxy-log-level": "debug"}}}),
        (1, 1, {"spec": {"initContainers": [{"name": "cloudtaser-s3proxy", "image": "old"}, {"name": "setup", "image": "busybox"}]}}),
        (3, 3, {"spec": {"containers": [{"name": "app", "image": "x", "env": [{"name": "AWS_ENDPOINT_URL_S3", "value": "http://minio:9000"}]}]}}),
        (0x27, 7, {"spec": {"volumes": [], "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["b.localhost"]}]}}),
    ]
    for n, (sel, pick, patch) in enumerate(patches):
        write("admission", f"merge-{n}", bytes([0x80 | sel, pick]) + json.dumps(patch).encode())
    write("admission", "invalid-review", bytes([7]) + b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}')


# --- classify: [suffix pick] + request head --------------------------------
def classify():
    for name, pick, head in [
        ("get-object", 0, "GET /bucket/some/key.txt\nhost: localhost:8190"),
        ("virtual-host-put", 0, "PUT /key?x-id=PutObject\nhost: bucket.localhost\ncontent-length: 5"),
        ("copy", 1, "PUT /b/k\nx-amz-copy-source: /src/a%20b?versionId=3\nx-amz-copy-source-if-match: \"e\""),
        ("upload-part", 0, "PUT /b/k?partNumber=2&uploadId=ctu1.a.b.c"),
        ("list-v2", 0, "GET /b?list-type=2&prefix=a%2F&max-keys=10"),
        ("presigned", 0, "GET /b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20240101T000000Z&X-Amz-Expires=60&x-amz-meta-a=b"),
        ("dot-segments", 2, "GET /b/a/../k"),
        ("delete-objects", 0, "POST /b?delete"),
    ]:
        write("classify", name, bytes([pick]) + head.encode())


# --- delete_objects: [layout] + document, or + the text of one Key ----------
def delete_objects():
    ns = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    docs = [
        ("boto3", f'<?xml version="1.0" encoding="UTF-8"?><Delete {ns}><Object><Key>team-a/x</Key></Object><Object><Key>team-a/y</Key><VersionId>3HL4kqtJ</VersionId></Object><Quiet>true</Quiet></Delete>'.encode()),
        ("conditional", f'<Delete {ns}><Object><Key>k</Key><ETag>"abc"</ETag><LastModifiedTime>2025-01-02T03:04:05.000Z</LastModifiedTime><Size>42</Size></Object></Delete>'.encode()),
        ("cdata-split", b"<Delete><Object><Key>team-<![CDATA[b/]]><!-- c -->se&#99;r&#x65;t</Key></Object></Delete>"),
        ("prefixed", b'<s3:Delete xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:Object><s3:Key>a</s3:Key></s3:Object></s3:Delete>'),
        ("utf16", "<Delete><Object><Key>team-b/secret</Key></Object></Delete>".encode("utf-16")),
        ("doctype", b'<!DOCTYPE Delete [<!ENTITY k "team-b/secret">]><Delete><Object><Key>&k;</Key></Object></Delete>'),
        ("line-ends", b"\xef\xbb\xbf<Delete>\r\n<Object><Key> a\r\nb&#13;\t</Key></Object></Delete>"),
    ]
    for name, doc in docs:
        write("delete_objects", name, bytes([0]) + doc)
    for name, key in [
        ("key-cdata", b"<![CDATA[team-b/secret]]>"),
        ("key-refs", b"a&amp;b&lt;c&gt;d&quot;&#x1F600;]]&gt;"),
        ("key-dots", b"team-a/../team-b/x"),
    ]:
        write("delete_objects", name, bytes([1]) + key)


if __name__ == "__main__":
    aws_chunked()
    stream_opener()
    xml()
    upload_id()
    range_()
    admission()
    classify()
    delete_objects()
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"{total} bytes in {sum(1 for f in CORPUS.rglob('*') if f.is_file())} seeds")
