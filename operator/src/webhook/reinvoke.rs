//! Reinvocation (`reinvocationPolicy: IfNeeded`): the proxy container is
//! already in the pod, and another webhook may have added to it since (an
//! env var, a volume mount, an annotation-driven field). Only the
//! operator's own fields are set again; everything else on the container
//! is kept, so the two webhooks do not undo each other.

use k8s_openapi::api::core::v1::Container;
use serde_json::Value;

/// Env vars with this prefix configure the proxy: only the operator sets
/// them, so one another webhook added (say a `..._PLAINTEXT_READS` the
/// config does not allow) is dropped rather than kept.
const PROXY_ENV_PREFIX: &str = "CLOUDTASER_S3PROXY_";

/// Fields the operator owns even though it never sets them: each could
/// change what the proxy runs or which settings it reads (`envFrom` could
/// carry proxy settings), so another webhook's value is removed.
const OWNED_UNSET: &[&str] = &["command", "envFrom"];

/// Lists merged item by item (the operator's items replace those with the
/// same key, other items stay where they are).
const KEYED_LISTS: &[(&str, &str)] = &[("env", "name"), ("volumeMounts", "name"), ("ports", "containerPort")];

fn merge_list(existing: Option<Value>, ours: Vec<Value>, key: &str, drop: impl Fn(&Value) -> bool) -> Value {
    let mut out: Vec<Value> = match existing {
        Some(Value::Array(items)) => items.into_iter().filter(|v| !drop(v)).collect(),
        _ => Vec::new(),
    };
    for item in ours {
        match out.iter_mut().find(|v| v.get(key) == item.get(key)) {
            Some(slot) => *slot = item,
            None => out.push(item),
        }
    }
    Value::Array(out)
}

/// `existing` with the fields of `ours` (the container the operator would
/// inject now) set on it.
pub fn merge_own(existing: &Container, ours: Container) -> Container {
    let (Ok(Value::Object(mut merged)), Ok(Value::Object(ours_json))) =
        (serde_json::to_value(existing), serde_json::to_value(&ours))
    else {
        return ours;
    };
    for field in OWNED_UNSET {
        if !ours_json.contains_key(*field) {
            merged.remove(*field);
        }
    }
    // Our env vars: foreign ones with the proxy's prefix go.
    let ours_names: Vec<Value> = ours_json
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name"))
        .cloned()
        .collect();
    let foreign_setting = |v: &Value| {
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        name.starts_with(PROXY_ENV_PREFIX) && !ours_names.iter().any(|n| n == name)
    };
    for (field, value) in ours_json {
        match KEYED_LISTS.iter().find(|(f, _)| *f == field) {
            Some((_, key)) => {
                let items = match value {
                    Value::Array(items) => items,
                    _ => Vec::new(),
                };
                let existing = merged.remove(&field);
                let list = if field == "env" {
                    merge_list(existing, items, key, foreign_setting)
                } else {
                    merge_list(existing, items, key, |_| false)
                };
                merged.insert(field, list);
            }
            None => {
                merged.insert(field, value);
            }
        }
    }
    // Env vars a foreign webhook set with our prefix when we set none.
    if let Some(Value::Array(env)) = merged.get_mut("env") {
        env.retain(|v| !foreign_setting(v));
    }
    serde_json::from_value(Value::Object(merged)).unwrap_or(ours)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn container(v: Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn foreign_fields_survive_and_ours_are_set_again() {
        let ours = container(json!({
            "name": "cloudtaser-s3proxy", "image": "proxy:2", "args": ["serve"],
            "env": [{"name": "CLOUDTASER_S3PROXY_LISTEN", "value": "127.0.0.1:8190"}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8191}}
        }));
        let existing = container(json!({
            "name": "cloudtaser-s3proxy", "image": "proxy:1", "args": ["serve"], "command": ["/bin/sh"],
            "envFrom": [{"configMapRef": {"name": "x"}}],
            "env": [
                {"name": "DD_AGENT_HOST", "value": "node"},
                {"name": "CLOUDTASER_S3PROXY_LISTEN", "value": "0.0.0.0:8190"},
                {"name": "CLOUDTASER_S3PROXY_PLAINTEXT_READS", "value": "*"}
            ],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "readinessProbe": {"httpGet": {"path": "/app-health/cloudtaser-s3proxy/readyz", "port": 15020}}
        }));
        let merged = serde_json::to_value(merge_own(&existing, ours.clone())).unwrap();
        let want = json!({
            "name": "cloudtaser-s3proxy", "image": "proxy:2", "args": ["serve"],
            "env": [
                {"name": "DD_AGENT_HOST", "value": "node"},
                {"name": "CLOUDTASER_S3PROXY_LISTEN", "value": "127.0.0.1:8190"}
            ],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8191}}
        });
        assert_eq!(merged, want);
        // Idempotent.
        let again = merge_own(&serde_json::from_value(merged.clone()).unwrap(), ours);
        assert_eq!(serde_json::to_value(again).unwrap(), merged);
    }
}
