//! What may be logged. The proxy's own events carry no secrets, keys or
//! bodies at any level; some dependencies' do at `trace`/`debug`, so their
//! targets are cut off whatever `CLOUDTASER_S3PROXY_LOG` asks for.

/// Targets whose events can carry secrets:
/// - `aws_sigv4`: the canonical request and string to sign at trace, which
///   name the access key id and the session token;
/// - `aws_credential_types`, `aws_config`, `aws_smithy_runtime`: credential
///   providers log loaded credentials (access key ids) and token exchanges
///   (IRSA web identity, Pod Identity) at debug and trace;
const SILENCED: &[&str] = &[
    "aws_sigv4",
    "aws_credential_types",
    "aws_config",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http",
];

/// Targets that may log at info and above only: `hyper`, `hyper_util`,
/// `reqwest`, `rustls` and `h2` write raw header and body bytes at trace
/// and debug (the Vault token, Vault's data-key answers, request bodies).
const QUIET_BELOW_INFO: &[&str] = &["hyper", "hyper_util", "reqwest", "rustls", "h2"];

fn under(target: &str, roots: &[&str]) -> bool {
    roots.iter().any(|s| target == *s || target.strip_prefix(s).is_some_and(|rest| rest.starts_with("::")))
}

/// Whether an event from `target` at `level` may be written.
pub fn may_log(target: &str, level: &tracing::Level) -> bool {
    !under(target, SILENCED) && (*level <= tracing::Level::INFO || !under(target, QUIET_BELOW_INFO))
}

#[cfg(test)]
mod tests {
    use super::may_log;
    use tracing::Level;

    #[test]
    fn dependency_targets_that_carry_secrets_are_silenced() {
        assert!(!may_log("aws_sigv4::http_request::sign", &Level::ERROR));
        assert!(!may_log("aws_sigv4", &Level::TRACE));
        assert!(!may_log("aws_config::web_identity_token", &Level::DEBUG));
        assert!(!may_log("hyper::proto::h1::io", &Level::TRACE));
        assert!(may_log("hyper::proto::h1::io", &Level::WARN));
        assert!(!may_log("reqwest::connect", &Level::DEBUG));
        assert!(may_log("cloudtaser_s3proxy::request", &Level::TRACE));
        assert!(may_log("hyperdrive", &Level::TRACE));
    }
}

/// How log lines are written (`CLOUDTASER_S3PROXY_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}
