// Usage: node roundtrip.mjs <endpoint> <bucket> <size-bytes>
// PutObject with a stream body (aws-chunked with a CRC32 trailer), a
// lib-storage multipart Upload from a stream, and reads with checksum
// validation on. Prints JSON; exits non-zero on any mismatch.
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { S3Client, PutObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";

const [endpoint, bucket, sizeArg] = process.argv.slice(2);
const size = Number(sizeArg);
const s3 = new S3Client({
  endpoint,
  region: "us-east-1",
  forcePathStyle: true,
  credentials: { accessKeyId: "js-workload", secretAccessKey: "js-dummy-secret" },
  requestChecksumCalculation: "WHEN_SUPPORTED",
  responseChecksumValidation: "WHEN_SUPPORTED",
});

function bytes(n, seed) {
  const out = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) { x = (x * 1103515245 + 12345) >>> 0; out[i] = x >>> 24; }
  return out;
}
const sha = (b) => createHash("sha256").update(b).digest("hex");
function streamOf(buf) {
  return Readable.from((function* () { for (let i = 0; i < buf.length; i += 65521) yield buf.subarray(i, i + 65521); })());
}
async function read(key) {
  const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, ChecksumMode: "ENABLED" }));
  return Buffer.from(await got.Body.transformToByteArray());
}

const small = bytes(300_000, 7);
await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "js/stream-put.bin", Body: streamOf(small), ContentLength: small.length }));
const big = bytes(size, 11);
const upload = new Upload({ client: s3, params: { Bucket: bucket, Key: "js/multipart.bin", Body: streamOf(big) }, partSize: 5 * 1024 * 1024, queueSize: 3 });
await upload.done();

const results = {
  stream_put: sha(await read("js/stream-put.bin")) === sha(small),
  multipart: sha(await read("js/multipart.bin")) === sha(big),
  head_size: (await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: "js/stream-put.bin" }))).ContentLength === small.length,
};
const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "js/stream" }));
results.list_size = listed.Contents?.[0]?.Size === small.length;
console.log(JSON.stringify(results));
process.exit(Object.values(results).every(Boolean) ? 0 : 1);
