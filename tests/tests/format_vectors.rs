//! The proxy's sealer reproduces docs/FORMAT.md's test vectors exactly, and
//! its opener reads them back.

use cloudtaser_s3proxy::format::{
    Authenticated, Binding, DataKey, EnvelopeMetadata, Header, ObjectLayout, ObjectName, Opener, SealedParts, Sealer,
    StoredLayout, ciphertext_len, decode_part_table, encode_part_table, manifest_tag, upload_id_tag, verify_envelope,
    verify_manifest, with_mac,
};
use cloudtaser_tests::{pattern, seal};

const DEK: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
    31,
];

fn salt() -> [u8; 32] {
    core::array::from_fn(|i| 0xA0 + i as u8)
}

fn vectors() -> Vec<std::collections::HashMap<String, String>> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md")).expect("docs/FORMAT.md");
    let block = doc.split("```vectors\n").nth(1).expect("a vectors block").split("```").next().unwrap();
    block
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("key=value");
                    (k.to_owned(), v.to_owned())
                })
                .collect()
        })
        .collect()
}

fn open(ciphertext: &[u8], part: u32) -> Vec<u8> {
    let mut opener = Opener::single_stream(shared_key(), part);
    let mut out = Vec::new();
    opener.update(ciphertext, &mut out).unwrap();
    opener.finish(&mut out).unwrap();
    out.concat()
}

#[test]
fn proxy_output_matches_the_documented_vectors() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 4);
    for v in vectors {
        let part: u32 = v["part"].parse().unwrap();
        let plaintext = match v.get("pattern") {
            Some(n) => pattern(n.parse().unwrap()),
            None => hex::decode(&v["plaintext"]).unwrap(),
        };
        let ct = seal(&DEK, salt(), part, &plaintext);
        match v.get("ciphertext") {
            Some(expected) => assert_eq!(hex::encode(&ct), *expected, "part={part}"),
            None => {
                assert_eq!(ct.len().to_string(), v["ciphertext_len"]);
                let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &ct);
                assert_eq!(hex::encode(sha), v["ciphertext_sha256"]);
            }
        }
        assert_eq!(ct.len() as u64, ciphertext_len(plaintext.len() as u64));
        assert_eq!(open(&ct, part), plaintext);
        if part == 0 {
            let mut whole = Opener::whole(shared_key(), ObjectLayout::single(plaintext.len() as u64));
            let mut out = Vec::new();
            whole.update(&ct, &mut out).unwrap();
            whole.finish(&mut out).unwrap();
            assert_eq!(out.concat(), plaintext);
        }
    }
}

/// docs/FORMAT.md's manifest vectors: the proxy's part-table encoding and
/// manifest tag, byte for byte (the independent reader checks the same).
#[test]
fn manifest_vectors_match() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md")).expect("docs/FORMAT.md");
    let block = doc.split("```manifest\n").nth(1).expect("a manifest block").split("```").next().unwrap();
    let mut seen = 0;
    for line in block.lines() {
        let fields: std::collections::HashMap<&str, &str> =
            line.split_whitespace().map(|kv| kv.split_once('=').expect("key=value")).collect();
        let table = decode_part_table(fields["parts"]).expect("a valid table");
        let layout = ObjectLayout::from_parts(&table).unwrap();
        assert_eq!(encode_part_table(&layout), fields["parts"]);
        let tag = manifest_tag(&DEK, &layout);
        assert_eq!(hex::encode(tag), fields["tag"]);
        verify_manifest(&DEK, &layout, &tag).unwrap();
        seen += 1;
    }
    assert_eq!(seen, 2);
}

/// The fixed key as the proxy holds a data key: one shared, zeroizing handle.
fn shared_key() -> std::sync::Arc<DataKey> {
    std::sync::Arc::new(DataKey::from_slice(&DEK).expect("32 bytes"))
}

/// The lines of one fenced block of docs/FORMAT.md, as key=value maps
/// (values hold no spaces; the block's keys may be UTF-8).
fn block(name: &str) -> Vec<std::collections::HashMap<String, String>> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md")).expect("docs/FORMAT.md");
    let fence = format!("```{name}\n");
    let body = doc.split(fence.as_str()).nth(1).expect("the block").split("```").next().unwrap();
    body.lines()
        .map(|line| {
            line.split(' ')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("key=value");
                    (k.to_owned(), v.to_owned())
                })
                .collect()
        })
        .collect()
}

/// docs/FORMAT.md's format-3 streams: the proxy's sealer writes them byte
/// for byte, and an opener that requires version 3 reads them.
#[test]
fn format_3_stream_vectors_match() {
    let vectors = block("vectors3");
    assert_eq!(vectors.len(), 4);
    for v in vectors {
        let part: u32 = v["part"].parse().unwrap();
        let plaintext = match v.get("pattern") {
            Some(n) => pattern(n.parse().unwrap()),
            None => hex::decode(&v["plaintext"]).unwrap(),
        };
        let salt = v.get("salt").map(|s| hex::decode(s).unwrap().try_into().unwrap()).unwrap_or_else(salt);
        let header = Header::new(part, plaintext.len() as u64, salt).unwrap().format_3();
        let mut sealer = Sealer::new(&DEK, header);
        let mut out = Vec::new();
        sealer.update(&plaintext, &mut out).unwrap();
        sealer.finish(&mut out).unwrap();
        let ct: Vec<u8> = out.concat().to_vec();
        match v.get("ciphertext") {
            Some(expected) => assert_eq!(hex::encode(&ct), *expected, "part={part}"),
            None => {
                let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &ct);
                assert_eq!(hex::encode(sha), v["ciphertext_sha256"]);
            }
        }
        let mut opener = Opener::single_stream(shared_key(), part).require_version(3);
        let mut read = Vec::new();
        opener.update(&ct, &mut read).unwrap();
        opener.finish(&mut read).unwrap();
        assert_eq!(read.concat(), plaintext);
        // The same body under a format-1 reader fails: the version is in the AAD.
        let mut legacy = Opener::single_stream(shared_key(), part);
        assert!(legacy.update(&ct, &mut Vec::new()).is_err());
    }
}

/// docs/FORMAT.md's envelope MACs, byte for byte, and their verification
/// under the names each binding covers.
#[test]
fn envelope_mac_vectors_match() {
    let vectors = block("envelope");
    assert_eq!(vectors.len(), 5);
    for v in vectors {
        let binding = match v["binding"].as_str() {
            "key" => Binding::Key,
            "bucket-key" => Binding::BucketKey,
            "none" => Binding::None,
            other => panic!("binding {other}"),
        };
        let size: u64 = v["size"].parse().unwrap();
        let (layout, salt) = match v.get("parts") {
            Some(parts) => {
                let table = decode_part_table(parts).unwrap();
                let tag = hex::decode(&v["streams"]).unwrap().try_into().unwrap();
                (StoredLayout::MultipartSealed(SealedParts { total: size, table: Some(table), tag }), None)
            }
            None => (StoredLayout::Single(size), Some(hex::decode(&v["salt"]).unwrap().try_into().unwrap())),
        };
        let envelope = EnvelopeMetadata {
            wrapped_key: "vault:v1:unused".into(),
            transit_key: v["transit"].clone(),
            layout,
            salt,
            auth: Some(Authenticated { binding, mac: None }),
            key_salt: None,
        };
        let name = ObjectName { bucket: &v["bucket"], key: &v["key"] };
        let sealed = with_mac(&DEK, envelope, name).unwrap();
        assert_eq!(hex::encode(sealed.auth.unwrap().mac.unwrap()), v["mac"], "{:?}", v);
        verify_envelope(&DEK, &sealed, name).unwrap();
        let moved = ObjectName { bucket: name.bucket, key: "elsewhere" };
        assert_eq!(verify_envelope(&DEK, &sealed, moved).is_ok(), binding == Binding::None);
    }
}

/// docs/FORMAT.md's bucket-key vectors: the derived data key and the MAC
/// that covers the key salt, byte for byte; a wrong salt does not verify.
#[test]
fn bucket_key_vectors_match() {
    let vectors = block("bucket-key");
    assert_eq!(vectors.len(), 3);
    for v in vectors {
        let key_salt: [u8; 32] = hex::decode(&v["key_salt"]).unwrap().try_into().unwrap();
        let derived = cloudtaser_s3proxy::format::derive_object_key(&DEK, &key_salt);
        assert_eq!(hex::encode(derived.bytes()), v["object_key"]);
        let binding = if v["binding"] == "bucket-key" { Binding::BucketKey } else { Binding::Key };
        let envelope = EnvelopeMetadata {
            wrapped_key: "vault:v1:unused".into(),
            transit_key: v["transit"].clone(),
            layout: StoredLayout::Single(v["size"].parse().unwrap()),
            salt: Some(hex::decode(&v["salt"]).unwrap().try_into().unwrap()),
            auth: Some(Authenticated { binding, mac: None }),
            key_salt: Some(key_salt),
        };
        let name = ObjectName { bucket: &v["bucket"], key: &v["key"] };
        let sealed = with_mac(derived.bytes(), envelope, name).unwrap();
        assert_eq!(hex::encode(sealed.auth.unwrap().mac.unwrap()), v["mac"]);
        verify_envelope(derived.bytes(), &sealed, name).unwrap();
        let relabelled = EnvelopeMetadata { key_salt: Some([0; 32]), ..sealed.clone() };
        assert!(verify_envelope(derived.bytes(), &relabelled, name).is_err(), "the MAC covers the key salt");
        assert!(verify_envelope(&DEK, &sealed, name).is_err(), "the bucket key itself is not the data key");
    }
}

/// docs/FORMAT.md's upload id tags, byte for byte.
#[test]
fn upload_id_vectors_match() {
    let vectors = block("upload-id");
    assert_eq!(vectors.len(), 3);
    for v in vectors {
        let tag = upload_id_tag(&DEK, ObjectName { bucket: &v["bucket"], key: &v["key"] }, &v["upstream"]);
        assert_eq!(hex::encode(tag), v["tag"]);
    }
}
