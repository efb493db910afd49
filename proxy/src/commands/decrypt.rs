//! `cloudtaser-s3proxy decrypt`: turns a downloaded ciphertext file back into
//! plaintext with its wrapped key and Vault access, without the proxy or
//! the bucket. Single-PUT and multipart objects alike: the file is read
//! stream by stream, each stream's header giving its length. What the
//! proxy checks of the metadata is checked here too: a single-PUT object's
//! salt and size, a format-2 object's manifest (and size, when given).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::CommandError;
use crate::app;
use crate::cli::DecryptArgs;
use crate::format::{
    DataKey, HEADER_LEN, Header, MANIFEST_TAG_LEN, ObjectLayout, Opener, SALT_LEN, ciphertext_len, verify_manifest,
};
use crate::settings::VaultAccess;

const CHUNK: usize = 1 << 20;

pub async fn run(access: &VaultAccess, args: &DecryptArgs) -> Result<(), CommandError> {
    let key_name = args.key_name.clone().unwrap_or_else(|| access.keys.write_key.clone());
    if key_name.is_empty() {
        return Err(CommandError::Usage("--key-name (the object's x-amz-meta-cloudtaser-transit-key) is required"));
    }
    let session = app::vault_session(&access.vault)?;
    let keys = app::key_service(&access.keys, session, &key_name);
    let key_salt =
        match &args.key_salt {
            Some(h) => Some(hex::decode(h).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or(
                CommandError::Usage("--key-salt must be the 64 hex digits of x-amz-meta-cloudtaser-key-salt"),
            )?),
            None => None,
        };
    let key = crate::format::object_key(keys.unwrap(&key_name, &args.wrapped_key).await?, key_salt.as_ref());
    let tmp = args.output.with_extension("cloudtaser-partial");
    let manifest =
        match &args.manifest {
            Some(h) => Some(hex::decode(h).ok().and_then(|b| <[u8; MANIFEST_TAG_LEN]>::try_from(b).ok()).ok_or(
                CommandError::Usage("--manifest must be the 64 hex digits of x-amz-meta-cloudtaser-manifest"),
            )?),
            None => None,
        };
    let salt = match &args.salt {
        Some(h) => Some(
            hex::decode(h)
                .ok()
                .and_then(|b| <[u8; SALT_LEN]>::try_from(b).ok())
                .ok_or(CommandError::Usage("--salt must be the 64 hex digits of x-amz-meta-cloudtaser-salt"))?,
        ),
        None => None,
    };
    let mac = match &args.mac {
        Some(h) => Some(
            hex::decode(h)
                .ok()
                .and_then(|b| <[u8; crate::format::ENVELOPE_MAC_LEN]>::try_from(b).ok())
                .ok_or(CommandError::Usage("--mac must be the 64 hex digits of x-amz-meta-cloudtaser-mac"))?,
        ),
        None => None,
    };
    let authenticated = match mac {
        Some(mac) => {
            let needs_key = args.binding != crate::format::Binding::None;
            if (needs_key && args.object_key.is_none())
                || (args.binding == crate::format::Binding::BucketKey && args.bucket.is_none())
            {
                return Err(CommandError::Usage(
                    "--mac needs the name its --binding binds: --object-key, and --bucket for bucket-key",
                ));
            }
            if manifest.is_some() {
                return Err(CommandError::Usage("--manifest is format 2's; a format-3 object has --mac"));
            }
            Some(Authenticated3 {
                mac,
                binding: args.binding,
                transit_key: key_name.clone(),
                bucket: args.bucket.clone().unwrap_or_default(),
                object_key: args.object_key.clone().unwrap_or_default(),
                key_salt,
            })
        }
        None => None,
    };
    let expected = Expected { manifest, salt, size: args.size, authenticated };
    let result = decrypt_file(&key, &args.input, &tmp, &expected);
    match result {
        Ok(bytes) => {
            std::fs::rename(&tmp, &args.output).map_err(CommandError::io(&args.output))?;
            eprintln!("decrypted {bytes} bytes to {}", args.output.display());
            Ok(())
        }
        Err(e) => {
            // Nothing of a stream that failed verification is left behind.
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A format-3 object's envelope, as far as the file does not hold it.
#[derive(Debug)]
pub struct Authenticated3 {
    pub mac: [u8; crate::format::ENVELOPE_MAC_LEN],
    pub binding: crate::format::Binding,
    pub transit_key: String,
    pub bucket: String,
    pub object_key: String,
    /// `cloudtaser-key-salt`, for a data key derived from a bucket key.
    pub key_salt: Option<[u8; 32]>,
}

/// What the object's metadata says, to be checked against the file.
#[derive(Debug, Default)]
pub struct Expected {
    /// Format 3: the MAC and what it binds.
    pub authenticated: Option<Authenticated3>,
    /// `cloudtaser-manifest`: format 2's part table tag.
    pub manifest: Option<[u8; MANIFEST_TAG_LEN]>,
    /// `cloudtaser-salt`: required of a single-PUT object.
    pub salt: Option<[u8; SALT_LEN]>,
    /// `cloudtaser-size`: required of a single-PUT object.
    pub size: Option<u64>,
}

/// Decrypts every stream in `input` into `output`; returns the plaintext
/// length. With a manifest, the part table found must match it (format 2);
/// without, only format-1 streams are accepted. A single-PUT stream needs
/// its salt and size, as the proxy requires (docs/FORMAT.md): without the
/// salt a body from another object under a shared data key would decrypt.
pub fn decrypt_file(key: &Arc<DataKey>, input: &Path, output: &Path, meta: &Expected) -> Result<u64, CommandError> {
    let manifest = meta.manifest.as_ref();
    let mut reader = std::io::BufReader::new(std::fs::File::open(input).map_err(CommandError::io(input))?);
    let mut writer = std::io::BufWriter::new(std::fs::File::create(output).map_err(CommandError::io(output))?);
    let mut total = 0u64;
    let mut table: Vec<(u32, u64)> = Vec::new();
    let mut headers: Vec<[u8; HEADER_LEN]> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut header = [0u8; HEADER_LEN];
        match read_full(&mut reader, &mut header).map_err(CommandError::Stream)? {
            0 => break,
            HEADER_LEN => {}
            _ => return Err(CommandError::Ciphertext("the file ends inside a stream header")),
        }
        let parsed = Header::decode(&header)?;
        // A single PUT is stream 0 alone; multipart streams ascend from 1
        // (format 1: 1, 2, 3, …; format 2: as the manifest's table says).
        // Formats 2 and 3 seal their table, so it may have gaps.
        let sealed_table = manifest.is_some() || meta.authenticated.is_some();
        let expected = match (table.last(), sealed_table) {
            (None, _) => parsed.part_number,
            (Some((0, _)), _) => {
                return Err(CommandError::Ciphertext("a single-PUT stream is followed by another stream"));
            }
            (Some((p, _)), false) => p + 1,
            (Some((p, _)), true) if parsed.part_number > *p => parsed.part_number,
            (Some(_), true) => return Err(CommandError::Ciphertext("the streams' part numbers do not ascend")),
        };
        let opener = Opener::single_stream(key.clone(), expected);
        let opener = if manifest.is_some() { opener.manifest_checked() } else { opener };
        // Format 3: version-3 streams only, every header hashed for the MAC.
        let opener = if meta.authenticated.is_some() {
            headers.push(header);
            opener.require_version(crate::format::VERSION_3)
        } else {
            opener
        };
        let mut opener = if expected == 0 {
            let (Some(salt), Some(size)) = (meta.salt, meta.size) else {
                return Err(CommandError::Usage(
                    "a single-PUT object needs --salt and --size (its x-amz-meta-cloudtaser-salt and -size), as \
                     the proxy requires them",
                ));
            };
            if parsed.plaintext_len != size {
                return Err(CommandError::Ciphertext(
                    "the stream's plaintext length is not the object's x-amz-meta-cloudtaser-size",
                ));
            }
            opener.expect_salt(Some(salt))
        } else if meta.salt.is_some() {
            return Err(CommandError::Usage("--salt is for single-PUT objects; a multipart object has none"));
        } else {
            opener
        };
        let mut out = Vec::new();
        opener.update(&header, &mut out)?;
        let mut remaining = ciphertext_len(parsed.plaintext_len) - HEADER_LEN as u64;
        while remaining > 0 {
            let want = remaining.min(CHUNK as u64) as usize;
            let got = read_full(&mut reader, &mut buf[..want]).map_err(CommandError::Stream)?;
            if got < want {
                return Err(CommandError::Ciphertext("the file is truncated"));
            }
            remaining -= got as u64;
            out.clear();
            opener.update(&buf[..got], &mut out)?;
            for chunk in &out {
                writer.write_all(chunk).map_err(CommandError::Stream)?;
                total += chunk.len() as u64;
            }
        }
        opener.finish(&mut out)?;
        table.push((expected, parsed.plaintext_len));
    }
    if table.is_empty() {
        return Err(CommandError::Ciphertext("the file holds no ciphertext"));
    }
    if let Some(tag) = manifest {
        let layout = ObjectLayout::from_parts(&table)?;
        verify_manifest(key.bytes(), &layout, tag).map_err(CommandError::NotWholeObject)?;
    }
    if meta.size.is_some_and(|size| size != total) {
        return Err(CommandError::Ciphertext("the plaintext length is not the object's x-amz-meta-cloudtaser-size"));
    }
    if let Some(auth) = &meta.authenticated {
        verify_format_3(key, auth, meta, &table, &headers, total)?;
    }
    writer.flush().map_err(CommandError::Stream)?;
    Ok(total)
}

/// Format 3: the envelope MAC over what the file holds and the flags say
/// (docs/FORMAT.md); the plaintext file is kept only if it verifies.
fn verify_format_3(
    key: &Arc<DataKey>,
    auth: &Authenticated3,
    meta: &Expected,
    table: &[(u32, u64)],
    headers: &[[u8; HEADER_LEN]],
    total: u64,
) -> Result<(), CommandError> {
    use crate::format::{Authenticated, EnvelopeMetadata, ObjectName, SealedParts, StoredLayout, streams_digest};
    let layout = match table {
        [(0, len)] => StoredLayout::Single(*len),
        _ => StoredLayout::MultipartSealed(SealedParts {
            total,
            table: Some(table.to_vec()),
            tag: streams_digest(headers),
        }),
    };
    let envelope = EnvelopeMetadata {
        wrapped_key: String::new(),
        transit_key: auth.transit_key.clone(),
        salt: if matches!(layout, StoredLayout::Single(_)) { meta.salt } else { None },
        layout,
        auth: Some(Authenticated { binding: auth.binding, mac: Some(auth.mac) }),
        key_salt: auth.key_salt,
    };
    let name = ObjectName { bucket: &auth.bucket, key: &auth.object_key };
    crate::format::verify_envelope(key.bytes(), &envelope, name).map_err(CommandError::NotWholeObject)
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Sealer, manifest_tag};

    fn shared(key: &[u8; 32]) -> Arc<DataKey> {
        Arc::new(DataKey::from_slice(key).unwrap())
    }

    fn seal(key: &[u8; 32], part: u32, data: &[u8]) -> Vec<u8> {
        let mut s = Sealer::new(key, Header::new(part, data.len() as u64, [part as u8; 32]).unwrap());
        let mut out = Vec::new();
        s.update(data, &mut out).unwrap();
        s.finish(&mut out).unwrap();
        out.concat()
    }

    #[test]
    fn decrypts_single_and_multipart_files_and_rejects_damage() {
        let key = [4u8; 32];
        let dir = std::env::temp_dir().join(format!("ct-decrypt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let single = seal(&key, 0, &data);
        let multi = [seal(&key, 1, &data[..196_608]), seal(&key, 2, &data[196_608..])].concat();
        let single_meta = Expected { salt: Some([0; 32]), size: Some(data.len() as u64), ..Default::default() };
        let none = Expected::default();
        for (name, blob, meta) in [("single", &single, &single_meta), ("multi", &multi, &none)] {
            let (input, output) = (dir.join(name), dir.join(format!("{name}.out")));
            std::fs::write(&input, blob).unwrap();
            assert_eq!(decrypt_file(&shared(&key), &input, &output, meta).unwrap(), data.len() as u64);
            assert_eq!(std::fs::read(&output).unwrap(), data);
        }
        let input = dir.join("cut");
        std::fs::write(&input, &multi[..multi.len() - 10]).unwrap();
        assert!(decrypt_file(&shared(&key), &input, &dir.join("cut.out"), &none).is_err());
        std::fs::write(&input, [&multi[..], &single[..]].concat()).unwrap();
        assert!(
            decrypt_file(&shared(&key), &input, &dir.join("cut.out"), &none).is_err(),
            "a stream from another object"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn single_put_files_need_their_salt_and_size() {
        let key = [6u8; 32];
        let dir = std::env::temp_dir().join(format!("ct-decrypt-salt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = b"a single PUT".to_vec();
        let (input, output) = (dir.join("single"), dir.join("single.out"));
        std::fs::write(&input, seal(&key, 0, &data)).unwrap();
        let right = Expected { salt: Some([0; 32]), size: Some(data.len() as u64), ..Default::default() };
        assert_eq!(decrypt_file(&shared(&key), &input, &output, &right).unwrap(), data.len() as u64);
        let cases = [
            (Expected::default(), "needs --salt and --size"),
            (Expected { size: Some(12), ..Default::default() }, "needs --salt and --size"),
            (Expected { salt: Some([0; 32]), ..Default::default() }, "needs --salt and --size"),
            // Another object's salt: the body was moved here from it.
            (Expected { salt: Some([1; 32]), size: Some(12), ..Default::default() }, "another object"),
            (Expected { salt: Some([0; 32]), size: Some(11), ..Default::default() }, "cloudtaser-size"),
        ];
        for (meta, why) in cases {
            let err = decrypt_file(&shared(&key), &input, &output, &meta).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        // A multipart file has no salt to give.
        std::fs::write(&input, seal(&key, 1, &data)).unwrap();
        let err = decrypt_file(&shared(&key), &input, &output, &right).unwrap_err();
        assert!(err.to_string().contains("a multipart object has none"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn format_2_files_need_their_manifest_and_must_be_whole() {
        let key = [5u8; 32];
        let dir = std::env::temp_dir().join(format!("ct-decrypt-v2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let v2 = |part: u32, data: &[u8]| {
            let header = Header::new(part, data.len() as u64, [part as u8; 32]).unwrap().multipart_v2();
            let mut s = Sealer::new(&key, header);
            let mut out = Vec::new();
            s.update(data, &mut out).unwrap();
            s.finish(&mut out).unwrap();
            out.concat()
        };
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        // Uneven parts with a gap in the numbering, as S3 allows.
        let streams = [v2(2, &data[..70_001]), v2(5, &data[70_001..150_000]), v2(7, &data[150_000..])];
        let table = [(2, 70_001), (5, 79_999), (7, 50_000)];
        let tag = manifest_tag(&key, &ObjectLayout::from_parts(&table).unwrap());
        let (input, output) = (dir.join("v2"), dir.join("v2.out"));
        std::fs::write(&input, streams.concat()).unwrap();
        let sealed = Expected { manifest: Some(tag), ..Default::default() };
        assert_eq!(decrypt_file(&shared(&key), &input, &output, &sealed).unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&output).unwrap(), data);
        let none = Expected::default();
        assert!(decrypt_file(&shared(&key), &input, &output, &none).is_err(), "format 2 without its manifest");
        let sized = Expected { manifest: Some(tag), size: Some(data.len() as u64 - 1), ..Default::default() };
        assert!(decrypt_file(&shared(&key), &input, &output, &sized).is_err(), "another size");
        // Cut back to its first two parts: every stream verifies, the manifest does not.
        std::fs::write(&input, streams[..2].concat()).unwrap();
        let err = decrypt_file(&shared(&key), &input, &output, &sealed).unwrap_err();
        assert!(matches!(err, CommandError::NotWholeObject(_)), "{err}");
        assert!(err.to_string().ends_with(": the file is not the whole object"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
