//! ETags as workloads see them.

/// The ETag a workload sees. The upstream's ETag of a single-stream object
/// is the MD5 of its ciphertext; S3 clients that compare ETags with the MD5
/// of what they sent or read (rclone, the Java SDK, s3cmd) skip objects whose
/// ETag has a part count. So such objects carry `-1`: one encrypted stream,
/// as S3 writes a one-part multipart ETag. Multipart ETags pass unchanged.
pub fn client_etag(upstream: &str) -> String {
    let inner = upstream.trim().trim_matches('"');
    if inner.is_empty() || inner.contains('-') { upstream.to_owned() } else { format!("\"{inner}-1\"") }
}
