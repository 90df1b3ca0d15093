//! Codec round trips (property-based and on real weights), candidate choice,
//! and hostile frames.

mod common;

use common::{MINILM, real_file};
use proptest::prelude::*;
use weightlake_formats::codec::{self, Encoding, decode, encode, encode_as};
use weightlake_formats::{FormatError, safetensors};

/// Encodes, checks the result is never larger than raw, decodes, compares.
fn round_trip(data: &[u8], elem_size: usize, base: Option<&[u8]>) -> Encoding {
    let (enc, bytes) = encode(data, elem_size, base).expect("encode");
    assert!(
        bytes.len() <= data.len(),
        "{enc} output {} > input {}",
        bytes.len(),
        data.len()
    );
    let back = decode(enc, &bytes, elem_size, base, data.len()).expect("decode");
    assert!(
        back == data,
        "{enc} round trip mismatch (elem_size {elem_size})"
    );
    enc
}

/// Deterministic normal(0, sigma) samples as f32 (LCG + Box-Muller).
fn normals(n: usize, sigma: f64, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut u = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (a, b) = (u(), u());
            ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos() * sigma) as f32
        })
        .collect()
}

/// BF16 bytes from f32 by truncation to the high two bytes.
fn to_bf16(f32_bytes: &[u8]) -> Vec<u8> {
    f32_bytes
        .chunks_exact(4)
        .flat_map(|c| [c[2], c[3]])
        .collect()
}

/// Data of a random element size, with no base, an unrelated base, or a base
/// it differs from in a few bytes (a sparse fine-tune).
fn arb_case() -> impl Strategy<Value = (Vec<u8>, usize, Option<Vec<u8>>)> {
    (
        prop_oneof![Just(1usize), Just(2), Just(3), Just(4), Just(8)],
        0usize..2048,
        0u8..3,
    )
        .prop_flat_map(|(es, n, mode)| {
            let len = n / es * es;
            // Mix random bytes with zeros so compressible planes are exercised too.
            let bytes =
                || prop::collection::vec(prop_oneof![3 => any::<u8>(), 1 => Just(0u8)], len);
            let flips = prop::collection::vec((any::<usize>(), any::<u8>()), 0..8);
            (bytes(), bytes(), flips, Just(es), Just(mode))
        })
        .prop_map(|(a, b, flips, es, mode)| match mode {
            0 => (a, es, None),
            1 => (a, es, Some(b)),
            _ => {
                let mut d = b.clone();
                let n = d.len().max(1);
                for (i, v) in flips {
                    if let Some(x) = d.get_mut(i % n) {
                        *x ^= v;
                    }
                }
                (d, es, Some(b))
            }
        })
}

proptest! {
    #[test]
    fn prop_round_trip((data, es, base) in arb_case()) {
        round_trip(&data, es, base.as_deref());
        for enc in Encoding::ALL {
            let Ok(bytes) = encode_as(enc, &data, es, base.as_deref()) else {
                prop_assert!(enc == Encoding::XorBytePlanes && base.is_none());
                continue;
            };
            let back = decode(enc, &bytes, es, base.as_deref(), data.len());
            prop_assert_eq!(back.as_deref(), Ok(data.as_slice()));
        }
    }

    #[test]
    fn prop_sparse_finetune_round_trip(seed in any::<u64>(), flips in prop::collection::vec((0usize..4096, any::<u8>()), 0..20)) {
        let base: Vec<u8> = normals(2048, 0.02, seed).iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut tuned = base.clone();
        for (at, v) in flips {
            tuned[at % base.len()] ^= v;
        }
        round_trip(&tuned, 4, Some(&base));
        round_trip(&to_bf16(&tuned), 2, Some(&to_bf16(&base)));
    }

    #[test]
    fn prop_decode_garbage_never_panics(enc in 0usize..4, es in 1usize..9, bytes in prop::collection::vec(any::<u8>(), 0..256), len in 0usize..4096) {
        let enc = Encoding::ALL[enc];
        let base = vec![7u8; len];
        if let Ok(out) = decode(enc, &bytes, es, Some(&base), len) {
            prop_assert_eq!(out.len(), len);
        }
    }
}

#[test]
fn encoding_names() {
    for e in Encoding::ALL {
        assert_eq!(e.as_str().parse::<Encoding>(), Ok(e));
    }
    assert_eq!(Encoding::XorBytePlanes.as_str(), "xor_planes");
    assert!(matches!(
        "lz4".parse::<Encoding>(),
        Err(FormatError::UnknownEncoding { .. })
    ));
}

#[test]
fn argument_errors() {
    assert!(matches!(
        encode(&[1, 2, 3], 0, None),
        Err(FormatError::BadElemSize { .. })
    ));
    assert!(matches!(
        encode(&[1, 2, 3], 2, None),
        Err(FormatError::LenNotMultiple {
            len: 3,
            elem_size: 2
        })
    ));
    assert!(matches!(
        encode_as(Encoding::XorBytePlanes, &[1, 2], 2, None),
        Err(FormatError::MissingBase { .. })
    ));
    assert!(matches!(
        encode_as(Encoding::XorBytePlanes, &[1, 2], 2, Some(&[1])),
        Err(FormatError::BaseLenMismatch { .. })
    ));
    assert!(matches!(
        encode_as(Encoding::BytePlanes, &[0; 16], 16, None),
        Err(FormatError::BadElemSize { .. })
    ));
    // a base of another length is ignored by encode
    let (enc, _) = encode(&[0; 64], 2, Some(&[0; 8])).expect("encode");
    assert_ne!(enc, Encoding::XorBytePlanes);
    assert!(matches!(
        decode(Encoding::XorBytePlanes, &[], 2, None, 0),
        Err(FormatError::MissingBase { .. })
    ));
    assert!(matches!(
        decode(Encoding::Raw, &[1, 2], 1, None, 3),
        Err(FormatError::DecodedLenMismatch { .. })
    ));
}

#[test]
fn large_bf16_picks_planes_via_sample() {
    let f32s: Vec<u8> = normals(1 << 20, 0.02, 42)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let bf16 = to_bf16(&f32s); // 2 MiB, above the full-try limit
    assert!(bf16.len() > codec::FULL_TRY_LIMIT);
    let (enc, bytes) = encode(&bf16, 2, None).expect("encode");
    assert_eq!(enc, Encoding::BytePlanes);
    let ratio = bytes.len() as f64 / bf16.len() as f64;
    assert!(ratio < 0.75, "bf16 planes ratio {ratio}");
    assert_eq!(
        decode(enc, &bytes, 2, None, bf16.len()).as_deref(),
        Ok(bf16.as_slice())
    );

    // a sparse fine-tune of it against the base
    let mut tuned = bf16.clone();
    for i in (0..tuned.len()).step_by(2000) {
        tuned[i] ^= 0x5a;
    }
    assert_eq!(round_trip(&tuned, 2, Some(&bf16)), Encoding::XorBytePlanes);
    let (_, xb) = encode(&tuned, 2, Some(&bf16)).expect("encode");
    assert!(
        xb.len() * 50 < tuned.len(),
        "xor ratio {}",
        xb.len() as f64 / tuned.len() as f64
    );
    // identical to base: constant-zero planes
    let (_, same) = encode(&bf16, 2, Some(&bf16)).expect("encode");
    assert!(
        same.len() < 64,
        "identical tensor encodes to {} bytes",
        same.len()
    );
}

#[test]
fn incompressible_stays_raw_and_zeros_compress() {
    let mut s = 9u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect();
    let (enc, _) = encode(&noise, 1, None).expect("encode");
    assert_eq!(enc, Encoding::Raw);
    assert_eq!(round_trip(&vec![0u8; 3 << 20], 1, None), Encoding::Zstd);
    assert_eq!(round_trip(&[], 2, None), Encoding::Raw);
}

#[test]
fn hostile_frames() {
    let data: Vec<u8> = to_bf16(
        &normals(4096, 0.02, 1)
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<_>>(),
    );
    let frame = encode_as(Encoding::BytePlanes, &data, 2, None).expect("encode");
    // every truncation and every single-byte corruption: error or exact length, no panic
    for cut in 0..frame.len() {
        assert!(
            decode(Encoding::BytePlanes, &frame[..cut], 2, None, data.len()).is_err(),
            "cut {cut}"
        );
    }
    for i in 0..frame.len().min(200) {
        let mut f = frame.clone();
        f[i] ^= 0xff;
        if let Ok(out) = decode(Encoding::BytePlanes, &f, 2, None, data.len()) {
            assert_eq!(out.len(), data.len());
        }
    }
    let mut trailing = frame.clone();
    trailing.push(0);
    assert!(matches!(
        decode(Encoding::BytePlanes, &trailing, 2, None, data.len()),
        Err(FormatError::CorruptFrame { .. })
    ));
    // wrong element size, wrong expected length, xor flag mismatch
    assert!(decode(Encoding::BytePlanes, &frame, 4, None, data.len()).is_err());
    assert!(decode(Encoding::BytePlanes, &frame, 2, None, data.len() + 2).is_err());
    assert!(decode(Encoding::XorBytePlanes, &frame, 2, Some(&data), data.len()).is_err());
    // decompression bomb: 64 MiB of zeros claimed to be 100 bytes
    let bomb = zstd_bomb();
    assert!(matches!(
        decode(Encoding::Zstd, &bomb, 1, None, 100),
        Err(FormatError::Zstd { .. })
    ));
    assert!(decode(Encoding::Zstd, &bomb, 1, None, 64 << 20).is_ok());
    let zs = encode_as(Encoding::Zstd, &data, 2, None).expect("zstd");
    assert!(decode(Encoding::Zstd, &zs, 2, None, data.len() + 1).is_err());
    assert!(decode(Encoding::Zstd, &zs[..zs.len() - 1], 2, None, data.len()).is_err());
}

/// A small zstd frame that inflates to 64 MiB.
fn zstd_bomb() -> Vec<u8> {
    encode_as(Encoding::Zstd, &vec![0u8; 64 << 20], 1, None).expect("zstd")
}

#[test]
fn real_minilm_weights_round_trip() {
    let Some(file) = real_file(MINILM) else {
        return;
    };
    let h = safetensors::parse_header(&file, file.len() as u64).expect("header");
    let start = h.data_start() as usize;
    let end = (start + (8 << 20)).min(file.len());
    let mut total = (0usize, 0usize, 0usize, 0usize);
    for t in &h.tensors {
        let (s, e) = (
            t.data_offset as usize,
            (t.data_offset + t.byte_len) as usize,
        );
        if s >= end {
            break;
        }
        let data = &file[s..e];
        let es = t.dtype.size_bytes().expect("whole-byte dtype");
        let (enc, bytes) = encode(data, es, None).expect("encode");
        assert_eq!(
            decode(enc, &bytes, es, None, data.len()).as_deref(),
            Ok(data)
        );
        total.0 += data.len();
        total.1 += bytes.len();
        if es == 4 {
            let bf = to_bf16(data);
            let (enc, bytes) = encode(&bf, 2, None).expect("encode bf16");
            assert_eq!(
                decode(enc, &bytes, 2, None, bf.len()).as_deref(),
                Ok(bf.as_slice())
            );
            total.2 += bf.len();
            total.3 += bytes.len();
        }
    }
    println!(
        "minilm first 8 MiB: F32 ratio {:.3}, BF16 ratio {:.3}",
        total.1 as f64 / total.0 as f64,
        total.3 as f64 / total.2 as f64
    );
    assert!(total.1 < total.0 && total.3 < total.2);
}

#[test]
fn equal_to_base_frame_is_what_encode_writes() {
    let f32s: Vec<u8> = normals(1 << 18, 0.02, 7)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    for (data, es) in [
        (f32s.clone(), 4),
        (to_bf16(&f32s), 2),
        (f32s[..24].to_vec(), 8),
    ] {
        let frame = codec::encode_equal_to_base(data.len(), es).expect("frame");
        // encode writes the frame whenever it is smaller than the data
        let expected = if frame.len() < data.len() {
            (Encoding::XorBytePlanes, frame.clone())
        } else {
            (Encoding::Raw, data.clone())
        };
        assert_eq!(
            encode(&data, es, Some(&data)).expect("encode"),
            expected,
            "elem_size {es}"
        );
        let back = decode(Encoding::XorBytePlanes, &frame, es, Some(&data), data.len());
        assert_eq!(back.as_deref(), Ok(data.as_slice()));
    }
    let empty = codec::encode_equal_to_base(0, 2).expect("empty frame");
    assert_eq!(
        decode(Encoding::XorBytePlanes, &empty, 2, Some(&[]), 0).as_deref(),
        Ok(&[][..])
    );
    assert!(codec::encode_equal_to_base(3, 2).is_err());
    assert!(codec::encode_equal_to_base(18, 9).is_err());
}
