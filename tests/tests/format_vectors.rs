//! The proxy's sealer reproduces docs/FORMAT.md's test vectors exactly, and
//! its opener reads them back.

use cloudtaser_s3proxy::format::{
    DataKey, ObjectLayout, Opener, ciphertext_len, decode_part_table, encode_part_table, manifest_tag, verify_manifest,
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
