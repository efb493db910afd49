//! The names of the environment variables the proxy reads, for crates that
//! configure it (the operator injects them into the sidecar). One place for
//! the names outside `config.rs`; a test checks that each one is the `env`
//! of a setting of [`crate::cli::Cli`], so the two cannot drift apart.

pub const LISTEN: &str = "CLOUDTASER_S3PROXY_LISTEN";
pub const HEALTH_LISTEN: &str = "CLOUDTASER_S3PROXY_HEALTH_LISTEN";
pub const S3_ENDPOINT: &str = "CLOUDTASER_S3PROXY_S3_ENDPOINT";
pub const S3_REGION: &str = "CLOUDTASER_S3PROXY_S3_REGION";
pub const TRANSIT_MOUNT: &str = "CLOUDTASER_S3PROXY_TRANSIT_MOUNT";
pub const TRANSIT_KEY: &str = "CLOUDTASER_S3PROXY_TRANSIT_KEY";
pub const TRANSIT_READ_KEYS: &str = "CLOUDTASER_S3PROXY_TRANSIT_READ_KEYS";
pub const KEY_RULES: &str = "CLOUDTASER_S3PROXY_KEY_RULES";
pub const KMS_KEY_IDS: &str = "CLOUDTASER_S3PROXY_KMS_KEY_IDS";
pub const PLAINTEXT_READS: &str = "CLOUDTASER_S3PROXY_PLAINTEXT_READS";
pub const ALLOWED_OPERATIONS: &str = "CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS";
pub const BUCKETS: &str = "CLOUDTASER_S3PROXY_BUCKETS";
pub const MAX_CONNECTIONS: &str = "CLOUDTASER_S3PROXY_MAX_CONNECTIONS";
pub const LOG: &str = "CLOUDTASER_S3PROXY_LOG";
pub const LOG_FORMAT: &str = "CLOUDTASER_S3PROXY_LOG_FORMAT";
pub const VAULT_ADDR: &str = "VAULT_ADDR";
pub const VAULT_NAMESPACE: &str = "VAULT_NAMESPACE";
pub const VAULT_CACERT: &str = "VAULT_CACERT";
pub const VAULT_AUTH_METHOD: &str = "VAULT_AUTH_METHOD";
pub const VAULT_AUTH_MOUNT: &str = "VAULT_AUTH_MOUNT";
pub const VAULT_TOKEN: &str = "VAULT_TOKEN";
pub const VAULT_ROLE: &str = "VAULT_ROLE";
pub const VAULT_K8S_TOKEN_PATH: &str = "VAULT_K8S_TOKEN_PATH";
pub const VAULT_ROLE_ID: &str = "VAULT_ROLE_ID";
pub const VAULT_SECRET_ID: &str = "VAULT_SECRET_ID";

/// Every name above.
pub const ALL: &[&str] = &[
    LISTEN,
    HEALTH_LISTEN,
    S3_ENDPOINT,
    S3_REGION,
    TRANSIT_MOUNT,
    TRANSIT_KEY,
    TRANSIT_READ_KEYS,
    KEY_RULES,
    KMS_KEY_IDS,
    PLAINTEXT_READS,
    ALLOWED_OPERATIONS,
    BUCKETS,
    MAX_CONNECTIONS,
    LOG,
    LOG_FORMAT,
    VAULT_ADDR,
    VAULT_NAMESPACE,
    VAULT_CACERT,
    VAULT_AUTH_METHOD,
    VAULT_AUTH_MOUNT,
    VAULT_TOKEN,
    VAULT_ROLE,
    VAULT_K8S_TOKEN_PATH,
    VAULT_ROLE_ID,
    VAULT_SECRET_ID,
];

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_name_is_read_by_the_config_parser() {
        let command = crate::cli::Cli::command();
        let envs: Vec<String> =
            command.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()).collect();
        for name in super::ALL {
            assert!(envs.iter().any(|e| e == name), "{name} is not the env of any setting in config.rs");
        }
        assert!(!envs.iter().any(|e| e == "CLOUDTASER_S3PROXY_NOT_A_SETTING"));
    }
}
