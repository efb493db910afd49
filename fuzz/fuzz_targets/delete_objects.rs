//! The DeleteObjects document: `s3::delete::DeleteRequest::{parse, to_xml}`
//! with the key checks `request` applies (`s3::classify::check_key`, and
//! `AccessPolicy::check_keys` for a `bucket/team-a/` scope).
//!
//! Byte 0 picks the layout: even, the rest is a whole document as a
//! workload could send it; odd, the rest is the text between `<Key>` and
//! `</Key>` of a one-object document (so references, CDATA and odd
//! characters in keys are reached quickly).
//!
//! Properties: nothing panics; a document `parse` accepted is rebuilt into
//! one that parses to the same value, is its own canonical form, and in
//! which a lenient reader (`s3::xml::texts_of`, no CDATA, no namespaces)
//! finds exactly the keys that were checked, in order. So what the upstream
//! reads from the rebuilt document is what the proxy checked.
#![no_main]

use std::sync::LazyLock;

use cloudtaser_s3proxy::request::policy::AccessPolicy;
use cloudtaser_s3proxy::s3::classify::check_key;
use cloudtaser_s3proxy::s3::delete::DeleteRequest;
use cloudtaser_s3proxy::s3::xml::texts_of;
use libfuzzer_sys::fuzz_target;

static POLICY: LazyLock<AccessPolicy> =
    LazyLock::new(|| AccessPolicy::new(&["default".to_owned()], &["b/team-a/".to_owned()]).expect("valid policy"));

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    let doc = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        [&b"<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key>"[..], rest, b"</Key></Object></Delete>"]
            .concat()
    };
    let Ok(request) = DeleteRequest::parse(&doc) else { return };
    let keys: Vec<&str> = request.keys().collect();
    assert!(!keys.is_empty() && keys.len() <= 1000 && keys.iter().all(|k| !k.is_empty()));
    // The checks the proxy applies; their verdict does not matter here,
    // only that what is checked is what goes upstream.
    let _ = keys.iter().try_for_each(|k| check_key(k));
    let _ = POLICY.check_keys("b", keys.iter().copied());

    let rebuilt = request.to_xml();
    let again = DeleteRequest::parse(rebuilt.as_bytes()).expect("the rebuilt document parses");
    assert_eq!(again, request, "the rebuilt document reads as the checked value");
    assert_eq!(again.to_xml(), rebuilt, "the rebuilt document is canonical");
    assert!(!rebuilt.contains("<![CDATA[") && !rebuilt.contains("<!--") && !rebuilt.contains('\r'));
    let lenient = texts_of(rebuilt.as_bytes(), b"Key").expect("a lenient reader reads the rebuilt document");
    assert_eq!(lenient, keys, "a lenient reader sees exactly the checked keys");
});
