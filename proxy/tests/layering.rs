//! The proxy's modules form layers, and a module may only use modules in
//! the layers below it: dependencies point one way, so there are no import
//! cycles. This reads the sources (`crate::<module>` paths outside test
//! code) and fails on any use that points sideways or up, or on a module
//! not placed in a layer. docs/ARCHITECTURE.md draws the same layers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom first. Modules in one layer do not use each other.
const LAYERS: &[&[&str]] = &[
    // Leaves: no crate dependencies.
    &["error_chain", "bounded_map", "body", "config_error", "metrics", "format", "logging"],
    // Credentials for the upstream and keys from Vault.
    &["credentials", "keys"],
    // The proxy's errors and their S3 codes.
    &["error"],
    // S3 vocabulary and body streams.
    &["s3", "stream"],
    // The signed client for the upstream.
    &["upstream"],
    // Dispatch and handlers.
    &["request"],
    // The listener that serves the request path.
    &["server"],
    // The typed settings, grouped by the unit that uses them.
    &["settings"],
    // The settings as given (clap), resolved into `settings` once.
    &["config"],
    // The command line, and the assembly of units from settings.
    &["cli", "app"],
    // The admin commands and the operator contract, on top of everything.
    &["commands", "env_names"],
    // In-process doubles, used by unit tests only.
    &["testing"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without its unit tests: test code may reach anywhere.
fn production_code(source: &str) -> &str {
    source.find("#[cfg(test)]\nmod tests").map_or(source, |i| &source[..i])
}

/// The top-level modules a source names through `crate::`.
fn used_modules(source: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = source;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::X, b};`: every path that starts the group or follows a comma.
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                used.insert(name);
            }
        } else {
            used.insert(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect());
        }
    }
    used
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a component").as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        // `tests/` folders are `#[cfg(test)] mod tests;`: test code may reach anywhere.
        if relative.components().any(|c| c.as_os_str() == "tests") {
            continue;
        }
        seen.insert(module.clone());
        let Some(own) = layer_of(&module) else {
            problems.push(format!("{module} is in no layer"));
            continue;
        };
        let source = std::fs::read_to_string(file).expect("read source");
        for used in used_modules(production_code(&source)) {
            if used == module || used.is_empty() {
                continue;
            }
            match layer_of(&used) {
                Some(layer) if layer < own => {}
                Some(_) => problems.push(format!("{} uses {used}, which is not below it", relative.display())),
                None => {}
            }
        }
    }
    assert!(seen.len() > 15, "found only {seen:?}: is the source tree where the test looks?");
    assert!(problems.is_empty(), "layering violations:\n{}", problems.join("\n"));
}

#[test]
fn the_scanner_sees_grouped_and_plain_paths() {
    let used = used_modules("use crate::{error::ProxyError, s3::xml};\nlet x = crate::keys::DataKey::random();");
    assert_eq!(used, ["error", "keys", "s3"].into_iter().map(String::from).collect());
}
