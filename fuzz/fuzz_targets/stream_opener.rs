//! The ciphertext format: `Header`, `Opener` and `Sealer` under a fixed key.
//!
//! Byte 0 picks the mode, the rest drives it:
//! - 0..=127: the rest is stored bytes as the upstream returned them. Header
//!   decoding, and opening as a single stream, a whole single-PUT object, a
//!   multipart object and a ranged read, fed in arbitrary splits. Nothing may
//!   panic; whatever is accepted must have exactly the declared length.
//! - 128..=255: round trip. Plaintext made from the rest is sealed (in
//!   arbitrary chunks), opened back whole and by a range, and must match;
//!   then one bit of the ciphertext is flipped, or it is cut short or
//!   extended, and opening must fail.
#![no_main]

use cloudtaser_s3proxy::format::{
    DataKey, FormatError, HEADER_LEN, Header, MULTIPART_VERSION, ObjectLayout, Opener, Room, SEGMENT_LEN, Sealer,
    ciphertext_len, plaintext_len,
};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x42; 32];

/// Deterministic split lengths from a seed.
fn cutter(seed: u64) -> impl FnMut() -> usize {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        match seed % 4 {
            0 => usize::MAX,
            1 => (state % 64) as usize + 1,
            2 => (state % 70_000) as usize + 1,
            _ => (state % 200_000) as usize + 1,
        }
    }
}

fn feed(opener: &mut Opener, input: &[u8], mut cuts: impl FnMut() -> usize) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = cuts().clamp(1, rest.len());
        let (part, tail) = rest.split_at(n);
        rest = tail;
        opener.update(part, &mut out)?;
    }
    opener.finish(&mut out)?;
    Ok(out.concat())
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in data.iter().skip(at).take(8).enumerate() {
        b[i] = *x;
    }
    u64::from_le_bytes(b)
}

fn stored_bytes(mode: u8, data: &[u8]) {
    let seed = u64::from(mode);
    // Header decoding: accepted headers re-encode to the same bytes.
    if let Ok(h) = Header::decode(data) {
        assert_eq!(&h.encode()[..], &data[..HEADER_LEN]);
    }

    // One stream whose length only its header knows (GET ?partNumber=N).
    let part = if mode & 1 == 0 { 0 } else { 1 };
    if let Ok(plain) = feed(&mut Opener::single_stream(shared_key(), part), data, cutter(seed)) {
        let declared = Header::decode(data).expect("opened without a valid header").plaintext_len;
        assert_eq!(plain.len() as u64, declared);
        assert_eq!(data.len() as u64, ciphertext_len(declared));
    }

    // A whole single-PUT object whose length the metadata records.
    if let Some(len) = plaintext_len(data.len() as u64) {
        let layout = ObjectLayout::single(len);
        if let Ok(plain) = feed(&mut Opener::whole(shared_key(), layout.clone()), data, cutter(seed >> 1)) {
            assert_eq!(plain.len() as u64, len);
        }
        // A ranged read of that object: the header comes separately.
        if len > 0 {
            let a = u64_at(data, 20) % len;
            let b = a + u64_at(data, 28) % (len - a);
            let span = layout.span(a, b);
            assert!(span.ciphertext_start <= span.ciphertext_end);
            assert!(span.ciphertext_end < data.len() as u64);
            let mut opener = Opener::range(shared_key(), layout.clone(), &span, b - a + 1);
            if opener.set_header(&data[..HEADER_LEN.min(data.len())]).is_ok() {
                let body = &data[span.ciphertext_start as usize..=span.ciphertext_end as usize];
                if let Ok(plain) = feed(&mut opener, body, cutter(seed)) {
                    assert_eq!(plain.len() as u64, b - a + 1);
                }
            }
        }
    }

    // A multipart object: the part length comes from the first header.
    if let Ok(first) = Header::decode(data) {
        if let Some(layout) = ObjectLayout::multipart(first.plaintext_len, data.len() as u64) {
            assert_eq!(layout.stored_len(), data.len() as u64);
            // Format-2 streams are only read once a manifest vouched for the table.
            let opener = Opener::whole(shared_key(), layout.clone());
            let mut opener = if first.version == MULTIPART_VERSION { opener.manifest_checked() } else { opener };
            if let Ok(plain) = feed(&mut opener, data, cutter(seed)) {
                assert_eq!(plain.len() as u64, layout.total);
            }
        }
    }
}

fn round_trip(mode: u8, data: &[u8]) {
    let [l0, l1, l2, flip0, flip1, flip2, cut_seed, rest @ ..] = data else { return };
    // Lengths up to ~4 segments, so segment boundaries are crossed.
    let len = (usize::from(*l0) | usize::from(*l1) << 8 | usize::from(*l2 & 3) << 16) % (4 * SEGMENT_LEN as usize + 3);
    let plain: Vec<u8> = if rest.is_empty() { vec![0; len] } else { rest.iter().copied().cycle().take(len).collect() };
    let salt = [*l0 ^ *flip0; 32];
    let part = u32::from(mode & 1);
    let header = Header::new(part, len as u64, salt).unwrap();

    let mut sealer = Sealer::new(&KEY, header.clone());
    let mut sealed = Vec::new();
    let mut cuts = cutter(u64::from(*cut_seed));
    let mut input = &plain[..];
    while !input.is_empty() {
        let n = cuts().clamp(1, input.len());
        let (c, tail) = input.split_at(n);
        input = tail;
        sealer.update(c, &mut sealed).unwrap();
    }
    sealer.finish(&mut sealed).unwrap();
    let ct: Vec<u8> = sealed.concat();
    assert_eq!(ct.len() as u64, ciphertext_len(len as u64));
    // With framing room (reused, never-zeroed buffers): the same bytes between the rooms, and zero rooms.
    let room = Room { front: 8, back: 2 };
    let mut roomy = Sealer::new(&KEY, header).with_room(room);
    let mut framed = Vec::new();
    let mut cuts = cutter(u64::from(*cut_seed).rotate_left(7));
    let mut input = &plain[..];
    while !input.is_empty() {
        let n = cuts().clamp(1, input.len());
        let (c, tail) = input.split_at(n);
        input = tail;
        roomy.update(c, &mut framed).unwrap();
    }
    roomy.finish(&mut framed).unwrap();
    let mut inner = Vec::with_capacity(ct.len());
    for b in &framed {
        assert!(b[..room.front].iter().chain(&b[b.len() - room.back..]).all(|&x| x == 0));
        inner.extend_from_slice(&b[room.front..b.len() - room.back]);
    }
    assert!(inner == ct, "sealing with room changed the ciphertext");
    assert_eq!(plaintext_len(ct.len() as u64), Some(len as u64));

    // Part 0 is a single-PUT object; part 1 the first (and only) part of a multipart one.
    let layout = if part == 0 {
        ObjectLayout::single(len as u64)
    } else {
        ObjectLayout::multipart(len as u64, ct.len() as u64).expect("a one-part multipart layout")
    };
    assert_eq!(layout.total, len as u64);
    let open_whole = |bytes: &[u8], seed: u64| {
        let mut opener = Opener::whole(shared_key(), layout.clone()).expect_salt(Some(salt));
        feed(&mut opener, bytes, cutter(seed))
    };
    assert_eq!(open_whole(&ct, u64::from(*cut_seed >> 2)).unwrap(), plain);
    let single = feed(&mut Opener::single_stream(shared_key(), part), &ct, cutter(u64::from(*flip2))).unwrap();
    assert_eq!(single, plain);

    // A ranged read returns exactly the slice.
    if len > 0 {
        let a = (usize::from(*flip0) << 8 | usize::from(*flip1)) * 7 % len;
        let b = a + usize::from(*flip2) * 331 % (len - a);
        let span = layout.span(a as u64, b as u64);
        let mut opener = Opener::range(shared_key(), layout.clone(), &span, (b - a + 1) as u64);
        opener.set_header(&ct[..HEADER_LEN]).unwrap();
        let body = &ct[span.ciphertext_start as usize..=span.ciphertext_end as usize];
        assert_eq!(feed(&mut opener, body, cutter(u64::from(*l1))).unwrap(), &plain[a..=b]);
    }

    // Any single-bit flip anywhere fails, whole or as a single stream.
    let bit = (usize::from(*flip0) | usize::from(*flip1) << 8 | usize::from(*flip2) << 16) % (ct.len() * 8);
    let mut flipped = ct.clone();
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert!(open_whole(&flipped, u64::from(*cut_seed)).is_err(), "bit {bit} flipped and still opened");
    assert!(
        feed(&mut Opener::single_stream(shared_key(), part), &flipped, cutter(u64::from(*l2))).is_err(),
        "bit {bit} flipped and still opened as a single stream"
    );

    // Cut short or extended: never a clean end.
    let cut = bit / 8;
    assert!(open_whole(&ct[..cut], u64::from(*l0)).is_err(), "truncated to {cut} bytes and still opened");
    let mut longer = ct.clone();
    longer.push(*flip1);
    assert!(open_whole(&longer, u64::from(*l0)).is_err(), "extended and still opened");
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    if *mode < 128 { stored_bytes(*mode, rest) } else { round_trip(*mode, rest) }
});

/// The fixed key as the proxy holds a data key: one shared, zeroizing handle.
fn shared_key() -> std::sync::Arc<DataKey> {
    std::sync::Arc::new(DataKey::from_slice(&KEY).expect("32 bytes"))
}
