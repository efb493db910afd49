//! The error a setting's value gets, naming the setting. A leaf module:
//! each layer parses the settings it owns (`request::policy`) with it, and
//! `config` resolves them all.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

pub fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name, reason: reason.into() }
}
