//! What a pod's `cloudtaser.io/s3-proxy` annotation asks for, parsed in one
//! place for the webhook (which resolves it) and the controller (which
//! watches the configuration it names).

use crate::crd::S3ProxyConfigSpec;
use crate::webhook::admission::ConfigLookup;
use crate::webhook::inject::ANNOTATION;

/// The annotation's value (on a pod, or on its namespace): `false` or
/// `disabled`, `true`, `name` or `<namespace>/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigRef {
    /// `false` (or `disabled`, Linkerd's word): leave the pod alone.
    Off,
    /// `true`: the config named `default` in the pod's namespace, else the
    /// cluster default from the chart values.
    Default,
    /// A config in the pod's own namespace.
    Named(String),
    /// A config in another namespace: never used, because the proxy's
    /// `secretKeyRef`s and Secret volumes resolve in the pod's namespace only.
    OtherNamespace { namespace: String, name: String },
}

/// Why an annotation names no configuration the pod can use; the message
/// says what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigRefError {
    #[error(
        "{ANNOTATION}=true needs an S3ProxyConfig named `default` in namespace {namespace} (or a cluster default in the chart values)"
    )]
    NoDefault { namespace: String },
    #[error(
        "{ANNOTATION}={value}: a pod can only use an S3ProxyConfig of its own namespace ({namespace}), because the Secrets the proxy reads must be in the pod's namespace; create the config in {namespace} and annotate the pod with its name"
    )]
    OtherNamespace { value: String, namespace: String },
    #[error("{ANNOTATION}={value}: no S3ProxyConfig {name} in namespace {namespace}; create it or fix the annotation")]
    NotFound { value: String, name: String, namespace: String },
}

impl ConfigRef {
    /// Parses an annotation value on a pod in `namespace` (whitespace and
    /// the case of `true`/`false` ignored; `<namespace>/name` naming the
    /// pod's own namespace is the same as `name`).
    pub fn from_annotation(value: &str, namespace: &str) -> Self {
        let value = value.trim();
        if value.eq_ignore_ascii_case("false") || value.eq_ignore_ascii_case("disabled") {
            return Self::Off;
        }
        if value.eq_ignore_ascii_case("true") {
            return Self::Default;
        }
        match value.split_once('/') {
            Some((ns, name)) if ns != namespace => {
                Self::OtherNamespace { namespace: ns.to_owned(), name: name.to_owned() }
            }
            Some((_, name)) => Self::Named(name.to_owned()),
            None => Self::Named(value.to_owned()),
        }
    }

    /// The (namespace, name) of the S3ProxyConfig the controller relates a
    /// pod to: `default` for `true`, none for configs the webhook refuses.
    pub fn watched(&self, namespace: &str) -> Option<(String, String)> {
        match self {
            Self::Default => Some((namespace.to_owned(), "default".to_owned())),
            Self::Named(name) => Some((namespace.to_owned(), name.clone())),
            Self::Off | Self::OtherNamespace { .. } => None,
        }
    }

    /// The configuration (its name and spec) a pod in `namespace` gets;
    /// `value` is the annotation as written, for the messages. `None` for `Off`.
    pub fn resolve(
        &self,
        configs: &dyn ConfigLookup,
        namespace: &str,
        value: &str,
    ) -> Option<Result<(String, S3ProxyConfigSpec), ConfigRefError>> {
        let value = value.trim().to_owned();
        Some(match self {
            Self::Off => return None,
            Self::Default => configs
                .get(namespace, "default")
                .map(|c| ("default".to_owned(), c))
                .or_else(|| configs.cluster_default().map(|c| ("cluster-default".to_owned(), c)))
                .ok_or_else(|| ConfigRefError::NoDefault { namespace: namespace.to_owned() }),
            Self::OtherNamespace { .. } => {
                Err(ConfigRefError::OtherNamespace { value, namespace: namespace.to_owned() })
            }
            Self::Named(name) => configs
                .get(namespace, name)
                .map(|c| (name.clone(), c))
                .ok_or_else(|| ConfigRefError::NotFound { value, name: name.clone(), namespace: namespace.to_owned() }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let r = |v| ConfigRef::from_annotation(v, "shop");
        assert_eq!(r(" FALSE "), ConfigRef::Off);
        assert_eq!(r("Disabled"), ConfigRef::Off);
        assert_eq!(r("True"), ConfigRef::Default);
        assert_eq!(r("orders"), ConfigRef::Named("orders".into()));
        assert_eq!(r("shop/orders"), ConfigRef::Named("orders".into()));
        assert_eq!(r("bank/orders"), ConfigRef::OtherNamespace { namespace: "bank".into(), name: "orders".into() });
        assert_eq!(r("true").watched("shop"), Some(("shop".into(), "default".into())));
        assert_eq!(r("shop/orders").watched("shop"), Some(("shop".into(), "orders".into())));
        assert_eq!(r("bank/orders").watched("shop"), None);
        assert_eq!(r("false").watched("shop"), None);
    }
}
