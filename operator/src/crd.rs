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
    printcolumn = r#"{"name":"Stale","type":"integer","jsonPath":".status.staleProxyPods","priority":1}"#,
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
    /// S3 operations the proxy serves, named as in the AWS S3 API reference
    /// (`GetObject`, `CreateBucket`), plus `default` (the proxy's safe set)
    /// and `all`. Any other operation is refused. Empty: `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^-?[A-Za-z]+$")))]
    pub allowed_operations: Vec<String>,
    /// `bucket` or `bucket/prefix` entries the workload may use; requests for
    /// any other bucket or prefix are refused. Empty: any bucket.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[A-Za-z0-9._-]{1,255}(/[^,\s]*)?$")))]
    pub buckets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySpec>,
}

/// A value in a spec the proxy would refuse, with the field and entry it is in.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("spec.{field}{} has an invalid entry {value:?}: {reason}", index.map(|i| format!("[{i}]")).unwrap_or_default())]
pub struct InvalidSpec {
    pub field: &'static str,
    /// The entry's index, for list fields.
    pub index: Option<usize>,
    pub value: String,
    pub reason: &'static str,
}

impl S3ProxyConfigSpec {
    /// Refuses list entries the proxy would refuse, including what the
    /// schema's patterns cannot say (`..` segments). Also the check for the
    /// chart's cluster default, which never passes the API server.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let invalid = |field, index, value: &str, reason| InvalidSpec {
            field,
            index: Some(index),
            value: value.to_owned(),
            reason,
        };
        for (i, op) in self.allowed_operations.iter().enumerate() {
            if let Some(reason) = operation_problem(op) {
                return Err(invalid("allowedOperations", i, op, reason));
            }
        }
        for (i, entry) in self.buckets.iter().enumerate() {
            if let Some(reason) = bucket_problem(entry) {
                return Err(invalid("buckets", i, entry, reason));
            }
        }
        if let Some(arn) = &self.credentials.role_arn
            && let Some(reason) = role_arn_problem(arn)
        {
            return Err(InvalidSpec { field: "credentials.roleArn", index: None, value: arn.clone(), reason });
        }
        if let Some(audience) = &self.credentials.audience
            && (audience.is_empty() || audience == "sts.amazonaws.com")
        {
            return Err(InvalidSpec {
                field: "credentials.audience",
                index: None,
                value: audience.clone(),
                reason: "must be an audience of the proxy's own, not empty and not sts.amazonaws.com (the audience the workload's IRSA token has, which would let the workload assume the proxy's role)",
            });
        }
        Ok(())
    }
}

/// An IAM role ARN: `arn:<partition>:iam::<12-digit account>:role/<path/name>`.
fn role_arn_problem(arn: &str) -> Option<&'static str> {
    let bad = Some("expected an IAM role ARN such as arn:aws:iam::123456789012:role/cloudtaser-s3proxy");
    let mut fields = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return bad;
    };
    let name = resource.strip_prefix("role/").unwrap_or("");
    let name_ok = !name.is_empty()
        && name.len() <= 512
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c));
    if !partition.starts_with("aws") || account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) || !name_ok
    {
        return bad;
    }
    None
}

fn operation_problem(op: &str) -> Option<&'static str> {
    if op.is_empty() {
        Some("it is empty; expected an S3 operation name such as GetObject, or `default` or `all`")
    } else if op.contains(',') {
        Some("it holds a comma; give one operation per entry")
    } else if !op.strip_prefix('-').unwrap_or(op).chars().all(|c| c.is_ascii_alphabetic()) || op == "-" {
        Some(
            "expected an S3 operation name as the AWS API reference spells it (letters only, e.g. GetObject), `-Name` to take one away, or `default` or `all`",
        )
    } else {
        None
    }
}

fn bucket_problem(entry: &str) -> Option<&'static str> {
    let (bucket, _) = entry.split_once('/').unwrap_or((entry, ""));
    if entry.contains(',') || entry.chars().any(char::is_whitespace) {
        Some("it holds a comma or whitespace; give one `bucket` or `bucket/prefix` per entry")
    } else if bucket.is_empty() {
        Some("it names no bucket; expected `bucket` or `bucket/prefix`")
    } else if bucket.len() > 255 || !bucket.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        Some("the bucket name must be 1-255 letters, digits, `.`, `-` or `_`")
    } else if bucket == "." {
        Some("`.` is not a bucket name")
    } else if entry.split('/').any(|segment| segment == "..") {
        Some("it has a `..` path segment")
    } else {
        None
    }
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
    /// The key that wraps every object no rule routes elsewhere.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub key: String,
    /// Keys per tenant: which key wraps new objects where, the longest
    /// matching prefix first (CLOUDTASER_S3PROXY_KEY_RULES).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<TransitRule>,
    /// Keys a workload may select with
    /// `x-amz-server-side-encryption-aws-kms-key-id`, by id
    /// (CLOUDTASER_S3PROXY_KMS_KEY_IDS); any other id is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_ids: Vec<TransitKeyId>,
    /// Keys only read: objects written under keys no rule names any more
    /// (CLOUDTASER_S3PROXY_TRANSIT_READ_KEYS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_keys: Vec<TransitKeyRef>,
}

/// A Transit key on a mount (the config's `mount` when unset).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitKeyRef {
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"))]
    pub mount: Option<String>,
}

/// New objects in `bucket` under `prefix` are wrapped by `key`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitRule {
    #[schemars(regex(pattern = r"^[a-z0-9.-]{3,63}$"))]
    pub bucket: String,
    /// An S3 prefix (a string prefix: end it with `/` for a folder); no `,` or `=`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(regex(pattern = r"^[^,=]*$"), length(max = 1024))]
    pub prefix: String,
    #[serde(flatten)]
    pub key: TransitKeyRef,
    /// This key's pool of pre-wrapped data keys, when it differs from the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65536))]
    pub pool_size: Option<u32>,
}

/// A workload-selectable key: requests naming `id` are wrapped by `key`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitKeyId {
    /// Compared byte for byte with the request's key id (an alias, an ARN, a name).
    #[schemars(regex(pattern = r"^[A-Za-z0-9/_.:+@-]+$"), length(max = 2048))]
    pub id: String,
    #[serde(flatten)]
    pub key: TransitKeyRef,
}

impl TransitKeyRef {
    /// `[mount/]key`, as the proxy's settings read it.
    pub fn setting(&self) -> String {
        match &self.mount {
            Some(mount) => format!("{}/{}", mount.trim_matches('/'), self.key),
            None => self.key.clone(),
        }
    }
}

impl TransitSpec {
    /// CLOUDTASER_S3PROXY_KEY_RULES, or `None` without rules.
    pub fn rules_setting(&self) -> Option<String> {
        (!self.rules.is_empty()).then(|| {
            let rule = |r: &TransitRule| {
                let scope = if r.prefix.is_empty() { r.bucket.clone() } else { format!("{}/{}", r.bucket, r.prefix) };
                let pool = r.pool_size.map(|n| format!(":pool={n}")).unwrap_or_default();
                format!("{scope}={}{pool}", r.key.setting())
            };
            self.rules.iter().map(rule).collect::<Vec<_>>().join(",")
        })
    }

    /// CLOUDTASER_S3PROXY_KMS_KEY_IDS, or `None` without ids.
    pub fn key_ids_setting(&self) -> Option<String> {
        (!self.key_ids.is_empty())
            .then(|| self.key_ids.iter().map(|i| format!("{}={}", i.id, i.key.setting())).collect::<Vec<_>>().join(","))
    }

    /// CLOUDTASER_S3PROXY_TRANSIT_READ_KEYS, or `None`.
    pub fn read_keys_setting(&self) -> Option<String> {
        (!self.read_keys.is_empty())
            .then(|| self.read_keys.iter().map(TransitKeyRef::setting).collect::<Vec<_>>().join(","))
    }
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
    {"rule": "self.source != 'serviceAccount' || !has(self.secretRef)", "message": "source serviceAccount takes no secretRef"},
    {"rule": "self.source != 'webIdentity' || has(self.roleArn)", "message": "source webIdentity needs roleArn"},
    {"rule": "self.source != 'webIdentity' || !has(self.secretRef)", "message": "source webIdentity takes no secretRef"},
    {"rule": "self.source == 'webIdentity' || (!has(self.roleArn) && !has(self.audience))", "message": "roleArn and audience are for source webIdentity"}
]))]
pub struct CredentialsSpec {
    /// `webIdentity` (recommended on EKS): the proxy container alone gets a
    /// service-account token with `audience` and assumes `roleArn` with it;
    /// no workload container holds that token or role. `serviceAccount`:
    /// the pod's IRSA or Pod Identity role, which every container of the
    /// pod holds (kept for compatibility; a workload that ignores the
    /// endpoint can write plaintext with it). `secret`: HMAC or static keys
    /// from a Secret.
    pub source: CredentialsSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeysSecretRef>,
    /// `webIdentity`: the IAM role the proxy assumes. Its trust policy must
    /// require this audience and the pod's service account (docs/OPERATOR.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"))]
    pub role_arn: Option<String>,
    /// `webIdentity`: the audience of the proxy's token (default
    /// `cloudtaser-s3proxy`). It must differ from `sts.amazonaws.com`, the
    /// audience of the token the EKS webhook gives workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// The audience of the proxy's web-identity token unless the config names one.
pub const DEFAULT_WEB_IDENTITY_AUDIENCE: &str = "cloudtaser-s3proxy";

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CredentialsSource {
    WebIdentity,
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
    /// One of trace, debug, info, warn, error, off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(trace|debug|info|warn|error|off)$"))]
    pub log_level: Option<String>,
    /// The proxy's UID (default 65532).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub run_as_user: Option<i64>,
    /// The proxy's GID (default 65532).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub run_as_group: Option<i64>,
    /// Leave the proxy's runAsUser and runAsGroup unset, so that the
    /// platform assigns them (OpenShift's restricted SCCs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub platform_assigns_user: bool,
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
    /// Injected pods whose proxy image is not the configured one.
    #[serde(default)]
    pub stale_proxy_pods: i64,
}

/// The CRD as YAML, as `crds/` and the chart carry it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&S3ProxyConfig::crd()).expect("CRD serialises")
}

#[cfg(test)]
mod tests {

    #[test]
    fn tenant_key_settings_render_as_the_proxy_parses_them() {
        use cloudtaser_s3proxy::keys::{KeyRef, KeyRoutes, KeyRule, KmsKeyId};
        let transit: TransitSpec = serde_json::from_value(serde_json::json!({
            "key": "orders",
            "rules": [
                {"bucket": "data", "prefix": "tenant-a/", "key": "tenant-a", "poolSize": 64},
                {"bucket": "data", "prefix": "tenant-b/", "key": "tenant-b", "mount": "transit-eu"},
                {"bucket": "archive", "key": "archive"}
            ],
            "keyIds": [{"id": "alias/tenant-a", "key": "tenant-a"}],
            "readKeys": [{"key": "old", "mount": "transit-old"}]
        }))
        .unwrap();
        let rules = transit.rules_setting().unwrap();
        let rules: Vec<KeyRule> = rules.split(',').map(|r| KeyRule::parse(r, "transit").unwrap()).collect();
        let ids = transit.key_ids_setting().unwrap();
        let ids: Vec<KmsKeyId> = ids.split(',').map(|i| KmsKeyId::parse(i, "transit").unwrap()).collect();
        let read = vec![KeyRef::parse(&transit.read_keys_setting().unwrap(), "transit").unwrap()];
        let routes = KeyRoutes::new(KeyRef::parse("orders", "transit").unwrap(), rules, ids, read).unwrap();
        assert_eq!(routes.route("data", "tenant-a/x"), "tenant-a");
        assert_eq!(routes.route("data", "tenant-b/x"), "tenant-b");
        assert_eq!(routes.get("tenant-b").unwrap().mount, "transit-eu");
        assert_eq!(routes.route("archive", "x"), "archive");
        assert_eq!(routes.route("data", "other"), "orders");
        assert_eq!(routes.pool_size("tenant-a"), Some(64));
        assert_eq!(routes.kms_key("alias/tenant-a"), Some("tenant-a"));
        assert_eq!(routes.get("old").unwrap().mount, "transit-old");
        let none: TransitSpec = serde_json::from_value(serde_json::json!({"key": "k"})).unwrap();
        assert_eq!((none.rules_setting(), none.key_ids_setting(), none.read_keys_setting()), (None, None, None));
    }

    use super::*;

    fn spec(allowed_operations: &[&str], buckets: &[&str]) -> S3ProxyConfigSpec {
        let mut spec: S3ProxyConfigSpec = serde_json::from_value(serde_json::json!({
            "upstream": {"region": "eu-central-1"},
            "vault": {"address": "https://vault:8200", "transit": {"key": "k"}, "auth": {"method": "kubernetes", "role": "r"}},
            "credentials": {"source": "serviceAccount"}
        }))
        .unwrap();
        spec.allowed_operations = allowed_operations.iter().map(|s| s.to_string()).collect();
        spec.buckets = buckets.iter().map(|s| s.to_string()).collect();
        spec
    }

    #[test]
    fn web_identity_needs_a_role_arn_and_an_audience_of_its_own() {
        let with = |arn: &str, audience: Option<&str>| {
            let mut s = spec(&[], &[]);
            s.credentials.source = CredentialsSource::WebIdentity;
            s.credentials.role_arn = Some(arn.to_owned());
            s.credentials.audience = audience.map(str::to_owned);
            s.validate()
        };
        for good in [
            "arn:aws:iam::123456789012:role/cloudtaser-s3proxy",
            "arn:aws-cn:iam::123456789012:role/team/a+b=c,d.e@f_g-h",
            "arn:aws-us-gov:iam::123456789012:role/x",
        ] {
            assert_eq!(with(good, None), Ok(()), "{good}");
        }
        for bad in [
            "",
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:sts::123456789012:role/x",
            "arn:gcp:iam::123456789012:role/x",
            "arn:aws:iam:eu-west-1:123456789012:role/x",
            "arn:aws:iam::123456789012:role/x y",
        ] {
            let e = with(bad, None).unwrap_err();
            assert_eq!((e.field, e.index), ("credentials.roleArn", None), "{bad}");
            assert!(e.to_string().starts_with("spec.credentials.roleArn has an invalid entry"), "{e}");
        }
        let arn = "arn:aws:iam::123456789012:role/p";
        assert_eq!(with(arn, Some("my-proxy")), Ok(()));
        for audience in ["", "sts.amazonaws.com"] {
            assert_eq!(with(arn, Some(audience)).unwrap_err().field, "credentials.audience");
        }
    }

    #[test]
    fn unset_and_good_lists_are_valid() {
        assert_eq!(spec(&[], &[]).validate(), Ok(()));
        let good = spec(
            &["default", "all", "GetObject", "CreateBucket", "deleteobjects"],
            &["orders", "orders/2024/", "Legacy_Bucket.v1", "a", "logs/a..b/c", "data/", &"b".repeat(255)],
        );
        assert_eq!(good.validate(), Ok(()));
    }

    #[test]
    fn bad_operations_are_refused_by_field_and_entry() {
        for (bad, reason) in [
            ("", "it is empty"),
            ("GetObject,PutObject", "it holds a comma"),
            ("Get Object", "letters only"),
            ("s3:GetObject", "letters only"),
            ("GetObject2", "letters only"),
        ] {
            let err = spec(&["default", bad], &[]).validate().unwrap_err();
            assert_eq!((err.field, err.index, err.value.as_str()), ("allowedOperations", Some(1), bad));
            assert!(err.reason.contains(reason), "{bad:?}: {err}");
            assert!(err.to_string().starts_with(&format!("spec.allowedOperations[1] has an invalid entry {bad:?}: ")));
        }
    }

    #[test]
    fn bad_buckets_are_refused_by_field_and_entry() {
        let too_long = "b".repeat(256);
        for (bad, reason) in [
            ("", "names no bucket"),
            ("/prefix", "names no bucket"),
            ("a,b", "comma or whitespace"),
            ("orders/2024,other", "comma or whitespace"),
            ("orders /x", "comma or whitespace"),
            ("orders/a b", "comma or whitespace"),
            ("orders\t", "comma or whitespace"),
            ("orders/x\ny", "comma or whitespace"),
            ("orders\u{a0}", "comma or whitespace"),
            ("bad:bucket", "bucket name"),
            ("bucket*/x", "bucket name"),
            (too_long.as_str(), "1-255"),
            (".", "not a bucket name"),
            ("./x", "not a bucket name"),
            ("..", "`..` path segment"),
            ("orders/../other", "`..` path segment"),
            ("orders/..", "`..` path segment"),
        ] {
            let err = spec(&[], &["orders", bad]).validate().unwrap_err();
            assert_eq!((err.field, err.index, err.value.as_str()), ("buckets", Some(1), bad));
            assert!(err.reason.contains(reason), "{bad:?}: {err}");
            assert!(err.to_string().starts_with(&format!("spec.buckets[1] has an invalid entry {bad:?}: ")));
        }
    }
}
