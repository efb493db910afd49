//! `S3ProxyConfig`: how pods in a namespace get their proxy. Defined here,
//! generated to `crds/` (a test fails when the two drift apart).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "cloudtaser.io";

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cloudtaser.io",
    version = "v1alpha1",
    kind = "S3ProxyConfig",
    plural = "s3proxyconfigs",
    shortname = "s3pc",
    namespaced,
    status = "S3ProxyConfigStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.upstream.endpoint"}"#,
    printcolumn = r#"{"name":"Credentials","type":"string","jsonPath":".spec.credentials.source"}"#,
    printcolumn = r#"{"name":"Injected","type":"integer","jsonPath":".status.injectedPods"}"#,
    printcolumn = r#"{"name":"Unprotected","type":"integer","jsonPath":".status.unprotectedPods"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct S3ProxyConfigSpec {
    pub upstream: UpstreamSpec,
    pub vault: VaultSpec,
    pub credentials: CredentialsSpec,
    /// Buckets the workload addresses virtual-hosted style: each gets a
    /// `<bucket>.localhost` host alias pointing at the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub virtual_hosted_buckets: Vec<String>,
    /// `bucket` or `bucket/prefix` entries where objects written before the
    /// proxy may be read as plaintext.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plaintext_reads: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySpec>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// `https://host[:port]`; AWS S3 for the region when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^/?#]+/?$"))]
    pub endpoint: Option<String>,
    /// Signing region; `auto` for GCS.
    #[schemars(regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultSpec {
    #[schemars(regex(pattern = r"^https?://.+"))]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A Secret key holding the PEM CA bundle for Vault's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<SecretKeySelector>,
    pub transit: TransitSpec,
    pub auth: VaultAuthSpec,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitSpec {
    #[serde(default = "default_transit_mount")]
    pub mount: String,
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub key: String,
}

fn default_transit_mount() -> String {
    "transit".to_owned()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.method != 'kubernetes' || has(self.role)", "message": "kubernetes auth needs role"},
    {"rule": "self.method != 'approle' || (has(self.roleId) && has(self.secretId))", "message": "approle auth needs roleId and secretId"},
    {"rule": "self.method != 'token' || has(self.token)", "message": "token auth needs token"}
]))]
pub struct VaultAuthSpec {
    pub method: VaultAuthMethod,
    /// Kubernetes auth: the Vault role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The auth method's mount path (default `kubernetes` or `approle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Audience of the projected service account token for Kubernetes auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Token auth: the Secret key holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretKeySelector>,
    /// AppRole: the role id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    /// AppRole: the Secret key holding the secret id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<SecretKeySelector>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VaultAuthMethod {
    Token,
    Kubernetes,
    Approle,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.source != 'secret' || has(self.secretRef)", "message": "source secret needs secretRef"},
    {"rule": "self.source != 'serviceAccount' || !has(self.secretRef)", "message": "source serviceAccount takes no secretRef"}
]))]
pub struct CredentialsSpec {
    /// `serviceAccount`: the pod's IRSA or Pod Identity role. `secret`: HMAC
    /// or static keys from a Secret.
    pub source: CredentialsSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeysSecretRef>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CredentialsSource {
    ServiceAccount,
    Secret,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeysSecretRef {
    pub name: String,
    #[serde(default = "default_access_key_key")]
    pub access_key_id_key: String,
    #[serde(default = "default_secret_key_key")]
    pub secret_access_key_key: String,
}

fn default_access_key_key() -> String {
    "access-key-id".to_owned()
}

fn default_secret_key_key() -> String {
    "secret-access-key".to_owned()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    pub name: String,
    pub key: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3ProxyConfigStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub injected_pods: i64,
    #[serde(default)]
    pub unprotected_pods: i64,
}

/// The CRD as YAML, as `crds/` and the chart carry it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&S3ProxyConfig::crd()).expect("CRD serialises")
}
