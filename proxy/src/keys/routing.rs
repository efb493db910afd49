//! Which Transit key wraps a new object: an ordered list of rules
//! `bucket[/prefix] → [mount/]key`, the longest match first, with a
//! default; and which Transit keys a workload may name itself through
//! `x-amz-server-side-encryption-aws-kms-key-id` (an allow-list of ids, never
//! a free Vault path). Pure: parsed once at start, then only looked up.
//!
//! A key is known by its name alone once configured: the envelope records
//! the Transit key name (docs/FORMAT.md), not its mount, so a reader finds
//! the mount here. Two mounts holding keys of one name therefore cannot both
//! be configured in one proxy; [`KeyRoutes::new`] refuses that.

use std::collections::BTreeMap;

use super::is_valid_key_name;

/// A Transit key and the mount it lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub mount: String,
    pub name: String,
}

impl KeyRef {
    /// `[mount/]key`: everything before the last `/` is the mount (itself
    /// one or more segments), `default_mount` when there is no `/`.
    pub fn parse(spec: &str, default_mount: &str) -> Result<Self, RouteError> {
        let spec = spec.trim();
        let (mount, name) = match spec.rsplit_once('/') {
            Some((mount, name)) => (mount.trim_matches('/'), name),
            None => (default_mount.trim_matches('/'), spec),
        };
        if !is_valid_key_name(name) {
            return Err(RouteError::KeyName(spec.to_owned()));
        }
        if mount.is_empty() || !mount.split('/').all(is_valid_key_name) {
            return Err(RouteError::Mount(spec.to_owned()));
        }
        Ok(Self { mount: mount.to_owned(), name: name.to_owned() })
    }
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.mount, self.name)
    }
}

/// One routing rule: objects in `bucket` whose key starts with `prefix`
/// (an S3 prefix: a string prefix, so end it with `/` to mean a folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRule {
    pub bucket: String,
    pub prefix: String,
    pub key: KeyRef,
    /// This key's pool size, when it differs from the shared default.
    pub pool_size: Option<usize>,
    /// Bucket keys on or off for this key, when it differs from
    /// CLOUDTASER_S3PROXY_BUCKET_KEYS.
    pub bucket_keys: Option<bool>,
}

impl KeyRule {
    /// `bucket[/prefix]=[mount/]key[:pool=N]`.
    pub fn parse(entry: &str, default_mount: &str) -> Result<Self, RouteError> {
        let entry = entry.trim();
        // The first `=` ends the scope: a prefix with `=` cannot be routed
        // (the option after the key holds one).
        let (scope, target) = entry.split_once('=').ok_or_else(|| RouteError::Syntax(entry.to_owned()))?;
        let mut options = target.split(':');
        let target = options.next().unwrap_or_default();
        let (mut pool_size, mut bucket_keys) = (None, None);
        for option in options {
            let bad = || RouteError::Option(entry.to_owned());
            match option.split_once('=') {
                Some(("pool", n)) if pool_size.is_none() => {
                    pool_size = Some(n.parse::<usize>().ok().filter(|n| *n <= 65536).ok_or_else(bad)?);
                }
                Some(("bucket-keys", v)) if bucket_keys.is_none() => {
                    bucket_keys = Some(match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad()),
                    });
                }
                _ => return Err(bad()),
            }
        }
        let (bucket, prefix) = scope.split_once('/').unwrap_or((scope, ""));
        if !is_bucket_name(bucket) {
            return Err(RouteError::Bucket(entry.to_owned()));
        }
        if prefix.len() > 1024 || prefix.chars().any(char::is_control) {
            return Err(RouteError::Prefix(entry.to_owned()));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            key: KeyRef::parse(target, default_mount)?,
            pool_size,
            bucket_keys,
        })
    }

    fn matches(&self, bucket: &str, key: &str) -> bool {
        self.bucket == bucket && key.starts_with(&self.prefix)
    }
}

/// S3's bucket name characters (3–63 of lowercase letters, digits, `.`,
/// `-`), which also keeps `=` and `/` out of a rule's scope.
fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
}

/// Rules, the default, the workload-selectable ids and the read-only keys,
/// checked against each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRoutes {
    default: KeyRef,
    /// Most specific first: longer prefixes before shorter ones.
    rules: Vec<KeyRule>,
    /// `x-amz-server-side-encryption-aws-kms-key-id` value → key name.
    kms_ids: BTreeMap<String, String>,
    /// Every configured key by name: the default, rule and id targets
    /// (which wrap new keys) and the read-only ones.
    keys: BTreeMap<String, KeyRef>,
    /// Pool sizes that differ from the default, by key name.
    pool_sizes: BTreeMap<String, usize>,
    /// Bucket keys switched on or off for a key against the default.
    bucket_keys: BTreeMap<String, bool>,
    /// The keys that wrap new data keys: the default first, then in name order.
    writers: Vec<String>,
}

/// A workload-selectable key: `id=[mount/]key`, or `[mount/]key` (the id is
/// then the key's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsKeyId {
    pub id: String,
    pub key: KeyRef,
}

impl KmsKeyId {
    pub fn parse(entry: &str, default_mount: &str) -> Result<Self, RouteError> {
        let entry = entry.trim();
        let (id, target) = match entry.split_once('=') {
            Some((id, target)) => (id.trim(), target),
            None => (entry.rsplit('/').next().unwrap_or(entry), entry),
        };
        // Ids are compared byte for byte with a request header: keep them
        // to what header values and ARNs/aliases are made of.
        if id.is_empty() || id.len() > 2048 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RouteError::KmsId(entry.to_owned()));
        }
        Ok(Self { id: id.to_owned(), key: KeyRef::parse(target, default_mount)? })
    }
}

impl KeyRoutes {
    /// Everything writes under `default`, and only it may be read.
    pub fn single(default: KeyRef) -> Self {
        Self::new(default, Vec::new(), Vec::new(), Vec::new()).expect("one key cannot conflict with itself")
    }

    pub fn new(
        default: KeyRef,
        mut rules: Vec<KeyRule>,
        kms_ids: Vec<KmsKeyId>,
        read_keys: Vec<KeyRef>,
    ) -> Result<Self, RouteError> {
        let mut keys = BTreeMap::new();
        let mut add = |key: &KeyRef| match keys.get(&key.name) {
            Some(known) if known != key => Err(RouteError::TwoMounts(key.name.clone())),
            _ => {
                keys.insert(key.name.clone(), key.clone());
                Ok(())
            }
        };
        add(&default)?;
        let mut writers = vec![default.name.clone()];
        let mut pool_sizes = BTreeMap::new();
        let mut bucket_keys = BTreeMap::new();
        for rule in &rules {
            add(&rule.key)?;
            writers.push(rule.key.name.clone());
            if let Some(on) = rule.bucket_keys
                && bucket_keys.insert(rule.key.name.clone(), on).is_some_and(|was| was != on)
            {
                return Err(RouteError::ConflictingOptions(rule.key.name.clone()));
            }
            if let Some(n) = rule.pool_size
                && pool_sizes.insert(rule.key.name.clone(), n).is_some_and(|m| m != n)
            {
                return Err(RouteError::ConflictingOptions(rule.key.name.clone()));
            }
        }
        let mut ids = BTreeMap::new();
        for entry in &kms_ids {
            add(&entry.key)?;
            writers.push(entry.key.name.clone());
            if ids.insert(entry.id.clone(), entry.key.name.clone()).is_some() {
                return Err(RouteError::DuplicateId(entry.id.clone()));
            }
        }
        for key in &read_keys {
            add(key)?;
        }
        // Stable: among equal lengths, the order given; a scope given twice is a mistake.
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        for (i, rule) in rules.iter().enumerate() {
            if rules[..i].iter().any(|r| r.bucket == rule.bucket && r.prefix == rule.prefix) {
                return Err(RouteError::DuplicateScope(format!("{}/{}", rule.bucket, rule.prefix)));
            }
        }
        let (first, rest) = writers.split_first_mut().expect("the default is first");
        let mut rest: Vec<String> = rest.iter().filter(|n| *n != first).cloned().collect();
        rest.sort();
        rest.dedup();
        let writers = std::iter::once(first.clone()).chain(rest).collect();
        Ok(Self { default, rules, kms_ids: ids, keys, pool_sizes, bucket_keys, writers })
    }

    /// The key new objects at `bucket/key` are wrapped by.
    pub fn route(&self, bucket: &str, key: &str) -> &str {
        self.rules.iter().find(|r| r.matches(bucket, key)).map_or(&self.default.name, |r| &r.key.name)
    }

    /// The key a workload selected by id, if the id is on the allow-list.
    pub fn kms_key(&self, id: &str) -> Option<&str> {
        self.kms_ids.get(id).map(String::as_str)
    }

    /// Whether workloads may select keys by id at all: without an
    /// allow-list, SSE-KMS headers are the provider's and are forwarded.
    pub fn selects_by_id(&self) -> bool {
        !self.kms_ids.is_empty()
    }

    pub fn default_key(&self) -> &KeyRef {
        &self.default
    }

    /// Every configured key (name → mount and name).
    pub fn keys(&self) -> impl Iterator<Item = &KeyRef> {
        self.keys.values()
    }

    pub fn get(&self, name: &str) -> Option<&KeyRef> {
        self.keys.get(name)
    }

    /// The keys that wrap new data keys, the default first.
    pub fn writers(&self) -> impl Iterator<Item = &KeyRef> {
        self.writers.iter().filter_map(|n| self.keys.get(n))
    }

    /// The names of every key whose data keys may be unwrapped: the
    /// default first, then the others in name order.
    pub fn readable(&self) -> Vec<String> {
        std::iter::once(self.default.name.clone())
            .chain(self.keys.keys().filter(|n| **n != self.default.name).cloned())
            .collect()
    }

    pub fn pool_size(&self, name: &str) -> Option<usize> {
        self.pool_sizes.get(name).copied()
    }

    /// Bucket keys switched on or off for `name` by its rule, if so.
    pub fn bucket_keys(&self, name: &str) -> Option<bool> {
        self.bucket_keys.get(name).copied()
    }

    pub fn rules(&self) -> &[KeyRule] {
        &self.rules
    }
}

/// A routing setting that cannot be used; the caller names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("`{0}` is not `bucket[/prefix]=[mount/]key[:pool=N]` (a prefix cannot hold `=`)")]
    Syntax(String),
    #[error("`{0}`: the bucket is not an S3 bucket name")]
    Bucket(String),
    #[error("`{0}`: the prefix is longer than 1024 bytes or holds control characters")]
    Prefix(String),
    #[error("`{0}`: the key name is not a Transit key name (letters, digits, `-`, `_`, `.`)")]
    KeyName(String),
    #[error("`{0}`: the mount is not a path of letters, digits, `-`, `_` and `.`")]
    Mount(String),
    #[error("`{0}`: the options are `:pool=N` (N at most 65536) and `:bucket-keys=on|off`, each once")]
    Option(String),
    #[error("`{0}` is not a usable key id (printable ASCII, at most 2048 bytes)")]
    KmsId(String),
    #[error("Transit key `{0}` is configured on two mounts; objects name keys by name only")]
    TwoMounts(String),
    #[error("Transit key `{0}` is given two different `:pool=` or `:bucket-keys=` options")]
    ConflictingOptions(String),
    #[error("`{0}` is routed twice")]
    DuplicateScope(String),
    #[error("key id `{0}` is listed twice")]
    DuplicateId(String),
}

/// The rules of a rules file: one per line, `#` comments and blank lines skipped.
pub fn rules_file_entries(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| l.split_once('#').map_or(l, |(rule, _)| rule).trim()).filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(spec: &str) -> KeyRef {
        KeyRef::parse(spec, "transit").unwrap()
    }

    fn rules(entries: &[&str]) -> Vec<KeyRule> {
        entries.iter().map(|e| KeyRule::parse(e, "transit").unwrap()).collect()
    }

    #[test]
    fn key_references_take_the_default_mount_or_their_own() {
        assert_eq!(key("app"), KeyRef { mount: "transit".into(), name: "app".into() });
        assert_eq!(key("transit-eu/tenant-b"), KeyRef { mount: "transit-eu".into(), name: "tenant-b".into() });
        assert_eq!(key("team/eu/k"), KeyRef { mount: "team/eu".into(), name: "k".into() });
        for bad in ["", "a/", "../k", "a//b/../k", "x/k k", "/k"] {
            let r = KeyRef::parse(bad, "transit");
            assert!(r.is_err(), "{bad}: {r:?}");
        }
        // A leading slash is an empty mount, not the default one.
        assert!(matches!(KeyRef::parse("/k", "transit"), Err(RouteError::Mount(_))));
    }

    #[test]
    fn the_longest_prefix_wins_then_the_bucket_then_the_default() {
        let routes = KeyRoutes::new(
            key("default"),
            rules(&[
                "data=data-key",
                "data/tenant-a/=tenant-a",
                "data/tenant-a/archive/=transit-eu/archive",
                "logs/=logs",
            ]),
            vec![],
            vec![],
        )
        .unwrap();
        assert_eq!(routes.route("data", "tenant-a/archive/2026/x"), "archive");
        assert_eq!(routes.route("data", "tenant-a/x"), "tenant-a");
        assert_eq!(routes.route("data", "tenant-ab/x"), "data-key", "a prefix ending in / is a folder");
        assert_eq!(routes.route("data", "x"), "data-key");
        assert_eq!(routes.route("logs", "anything"), "logs");
        assert_eq!(routes.route("other", "tenant-a/x"), "default");
        assert_eq!(routes.get("archive").unwrap().mount, "transit-eu");
        assert_eq!(
            routes.writers().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            ["default", "archive", "data-key", "logs", "tenant-a"]
        );
    }

    #[test]
    fn rules_parse_with_their_options_and_errors() {
        let r = KeyRule::parse("b-1/p/q=eu/k:pool=64", "transit").unwrap();
        assert_eq!(
            (r.bucket.as_str(), r.prefix.as_str(), r.key.to_string(), r.pool_size),
            ("b-1", "p/q", "eu/k".into(), Some(64))
        );
        let r = KeyRule::parse("b-1=k:bucket-keys=off:pool=8", "transit").unwrap();
        assert_eq!((r.pool_size, r.bucket_keys), (Some(8), Some(false)));
        assert!(KeyRule::parse("b-1=k:bucket-keys=maybe", "transit").is_err());
        assert!(KeyRule::parse("b-1=k:pool=1:pool=2", "transit").is_err());
        type Expected = fn(&RouteError) -> bool;
        let cases: &[(&str, Expected)] = &[
            ("no-equals", |e| matches!(e, RouteError::Syntax(_))),
            ("B/p=k", |e| matches!(e, RouteError::Bucket(_))),
            ("ab=k", |e| matches!(e, RouteError::Bucket(_))),
            ("bkt/p=k:size=3", |e| matches!(e, RouteError::Option(_))),
            ("bkt/p=k:pool=70000", |e| matches!(e, RouteError::Option(_))),
            ("bkt/p=k/", |e| matches!(e, RouteError::KeyName(_))),
            ("bkt/p\n=k", |e| matches!(e, RouteError::Prefix(_))),
        ];
        for (entry, expected) in cases {
            let e = KeyRule::parse(entry, "transit").unwrap_err();
            assert!(expected(&e), "{entry}: {e:?}");
        }
    }

    #[test]
    fn conflicts_between_settings_are_refused() {
        let two_mounts = KeyRoutes::new(key("k"), rules(&["bkt/a=eu/k"]), vec![], vec![]);
        assert_eq!(two_mounts, Err(RouteError::TwoMounts("k".into())));
        let twice = KeyRoutes::new(key("d"), rules(&["bkt/a=k1", "bkt/a=k2"]), vec![], vec![]);
        assert_eq!(twice, Err(RouteError::DuplicateScope("bkt/a".into())));
        let sizes = KeyRoutes::new(key("d"), rules(&["bkt/a=k:pool=1", "bkt/b=k:pool=2"]), vec![], vec![]);
        assert_eq!(sizes, Err(RouteError::ConflictingOptions("k".into())));
        let ids = vec![KmsKeyId::parse("t=a", "transit").unwrap(), KmsKeyId::parse("t=b", "transit").unwrap()];
        assert_eq!(KeyRoutes::new(key("d"), vec![], ids, vec![]), Err(RouteError::DuplicateId("t".into())));
        let read_conflict = KeyRoutes::new(key("d"), vec![], vec![], vec![key("eu/d")]);
        assert_eq!(read_conflict, Err(RouteError::TwoMounts("d".into())));
    }

    #[test]
    fn workload_ids_map_to_configured_keys_only() {
        let ids = ["alias/tenant-a=tenant-a", "transit-eu/tenant-b", "arn:aws:kms:eu-west-1:1:key/x=k"]
            .iter()
            .map(|e| KmsKeyId::parse(e, "transit").unwrap())
            .collect();
        let routes = KeyRoutes::new(key("d"), vec![], ids, vec![key("old")]).unwrap();
        assert!(routes.selects_by_id());
        assert_eq!(routes.kms_key("alias/tenant-a"), Some("tenant-a"));
        assert_eq!(routes.kms_key("tenant-b"), Some("tenant-b"));
        assert_eq!(routes.kms_key("arn:aws:kms:eu-west-1:1:key/x"), Some("k"));
        assert_eq!(routes.kms_key("transit/tenant-a"), None, "ids are names on a list, never Vault paths");
        assert_eq!(routes.kms_key("old"), None, "a read-only key writes nothing");
        assert_eq!(routes.readable(), ["d", "k", "old", "tenant-a", "tenant-b"]);
        assert!(KmsKeyId::parse("a b=k", "transit").is_err());
        assert!(!KeyRoutes::single(key("d")).selects_by_id());
    }

    #[test]
    fn rules_files_skip_comments_and_blank_lines() {
        let text = "# tenants\n\ndata/tenant-a/=tenant-a  # A\n  data/tenant-b/=transit-eu/tenant-b\n";
        assert_eq!(
            rules_file_entries(text).collect::<Vec<_>>(),
            ["data/tenant-a/=tenant-a", "data/tenant-b/=transit-eu/tenant-b"]
        );
    }
}
