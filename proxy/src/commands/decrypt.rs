//! `cloudtaser-s3proxy decrypt`: turns a downloaded ciphertext file back into
//! plaintext with its wrapped key and Vault access, without the proxy or
//! the bucket. Single-PUT and multipart objects alike: the file is read
//! stream by stream, each stream's header giving its length.

use std::io::{Read, Write};
use std::path::Path;

use crate::app;
use crate::config::{DecryptArgs, ProxyConfig};
use crate::format::{HEADER_LEN, Header, Opener, ciphertext_len};

const CHUNK: usize = 1 << 20;

pub async fn run(config: &ProxyConfig, args: &DecryptArgs) -> Result<(), String> {
    let key_name = args.key_name.clone().unwrap_or_else(|| config.transit_key.clone());
    if key_name.is_empty() {
        return Err("--key-name (the object's x-amz-meta-cloudtaser-transit-key) is required".into());
    }
    let session = app::vault_session(config)?;
    let keys = app::key_service(config, session, &key_name);
    let key = keys.unwrap(&key_name, &args.wrapped_key).await.map_err(|e| e.to_string())?;
    let tmp = args.output.with_extension("cloudtaser-partial");
    let result = decrypt_file(key.bytes(), &args.input, &tmp);
    match result {
        Ok(bytes) => {
            std::fs::rename(&tmp, &args.output).map_err(|e| format!("{}: {e}", args.output.display()))?;
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

/// Decrypts every stream in `input` into `output`; returns the plaintext length.
pub fn decrypt_file(key: &[u8; 32], input: &Path, output: &Path) -> Result<u64, String> {
    let mut reader =
        std::io::BufReader::new(std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?);
    let mut writer =
        std::io::BufWriter::new(std::fs::File::create(output).map_err(|e| format!("{}: {e}", output.display()))?);
    let mut total = 0u64;
    let mut part: Option<u32> = None;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut header = [0u8; HEADER_LEN];
        match read_full(&mut reader, &mut header).map_err(|e| e.to_string())? {
            0 => break,
            HEADER_LEN => {}
            _ => return Err("the file ends inside a stream header".into()),
        }
        let parsed = Header::decode(&header).map_err(|e| e.to_string())?;
        // A single PUT is stream 0; multipart objects are streams 1, 2, 3, …
        let expected = part.map_or(parsed.part_number, |p| p + 1);
        let mut opener = Opener::single_stream(key, expected);
        let mut out = Vec::new();
        opener.update(&header, &mut out).map_err(|e| e.to_string())?;
        let mut remaining = ciphertext_len(parsed.plaintext_len) - HEADER_LEN as u64;
        while remaining > 0 {
            let want = remaining.min(CHUNK as u64) as usize;
            let got = read_full(&mut reader, &mut buf[..want]).map_err(|e| e.to_string())?;
            if got < want {
                return Err("the file is truncated".into());
            }
            remaining -= got as u64;
            out.clear();
            opener.update(&buf[..got], &mut out).map_err(|e| e.to_string())?;
            for chunk in &out {
                writer.write_all(chunk).map_err(|e| e.to_string())?;
                total += chunk.len() as u64;
            }
        }
        opener.finish(&mut out).map_err(|e| e.to_string())?;
        part = Some(expected);
    }
    if part.is_none() {
        return Err("the file holds no ciphertext".into());
    }
    writer.flush().map_err(|e| e.to_string())?;
    Ok(total)
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
    use crate::format::Sealer;

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
        for (name, blob) in [("single", &single), ("multi", &multi)] {
            let (input, output) = (dir.join(name), dir.join(format!("{name}.out")));
            std::fs::write(&input, blob).unwrap();
            assert_eq!(decrypt_file(&key, &input, &output).unwrap(), data.len() as u64);
            assert_eq!(std::fs::read(&output).unwrap(), data);
        }
        let input = dir.join("cut");
        std::fs::write(&input, &multi[..multi.len() - 10]).unwrap();
        assert!(decrypt_file(&key, &input, &dir.join("cut.out")).is_err());
        std::fs::write(&input, [&multi[..], &single[..]].concat()).unwrap();
        assert!(decrypt_file(&key, &input, &dir.join("cut.out")).is_err(), "a stream from another object");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
