//! GGUF header parsing: a representative synthetic file, every rule broken
//! once, incremental reads via `NeedMore`, and the real tiny model when present.

mod common;

use common::{RawTensorInfo, TINY_GGUF, gguf_file, gguf_header, real_file, sample_gguf};
use weightlake_formats::gguf::{self, GgufArray, GgufHeader, GgufValue, parse};
use weightlake_formats::{FormatError, GgmlType};

fn parse_all(file: &[u8]) -> Result<GgufHeader, FormatError> {
    parse(file, file.len() as u64)
}

/// Parses as a streaming caller would: start with 16 bytes, grow on NeedMore.
fn parse_streaming(file: &[u8]) -> (Result<GgufHeader, FormatError>, usize) {
    let mut have = 16.min(file.len());
    let mut rounds = 0;
    loop {
        rounds += 1;
        match parse(&file[..have], file.len() as u64) {
            Err(FormatError::NeedMore { needed }) => {
                assert!(
                    needed as usize > have,
                    "NeedMore must ask for more than it had"
                );
                have = (needed as usize).max(have * 2).min(file.len());
            }
            other => return (other, rounds),
        }
    }
}

#[test]
fn sample_file_round_trips() {
    let file = sample_gguf();
    let h = parse_all(&file).expect("valid sample");
    assert_eq!(h.version, 3);
    assert_eq!(h.alignment, 64);
    assert_eq!(h.architecture(), Some("llama"));
    assert_eq!(h.get("a.i64"), Some(&GgufValue::I64(-(1 << 40))));
    assert_eq!(h.get("a.bool"), Some(&GgufValue::Bool(true)));
    let toks = h
        .get("tokenizer.ggml.tokens")
        .and_then(GgufValue::as_array)
        .expect("tokens");
    assert_eq!(
        toks,
        &GgufArray::String(vec!["<s>".into(), "héllo".into(), String::new()])
    );
    assert!(
        matches!(h.get("a.nested"), Some(GgufValue::Array(GgufArray::Array(v))) if v.len() == 3)
    );
    assert_eq!(h.data_offset % 64, 0);
    assert!(h.data_offset >= h.header_len_bytes && h.data_offset < h.header_len_bytes + 64);
    let q = h.tensor("blk.0.attn_q.weight").expect("q");
    assert_eq!((q.ggml_type, q.byte_len), (GgmlType::Q4_K, 4 * 144));
    assert!(q.ggml_type.is_quantized());
    let emb = h.tensor("tok_embd.weight").expect("emb");
    assert_eq!((emb.offset, emb.byte_len), (h.data_offset, 64 * 10 * 2));
    assert_eq!(
        h.tensor("blk.0.ffn.weight").map(|t| t.byte_len),
        Some(2 * 3 * 34)
    );
    let last = h.tensors.last().expect("tensors");
    assert_eq!(last.offset + last.byte_len, file.len() as u64);
}

#[test]
fn need_more_streaming() {
    let file = sample_gguf();
    let (res, rounds) = parse_streaming(&file);
    assert_eq!(res, parse_all(&file));
    assert!(rounds > 1);
    assert_eq!(
        parse(&file[..3], file.len() as u64),
        Err(FormatError::NeedMore { needed: 4 })
    );
    // the prefix need not include the data section
    let h = parse_all(&file).expect("valid");
    assert!(parse(&file[..h.header_len_bytes as usize], file.len() as u64).is_ok());
    assert!(matches!(
        parse(&file[..h.header_len_bytes as usize - 1], file.len() as u64),
        Err(FormatError::NeedMore { .. })
    ));
}

#[test]
fn versions_and_magic() {
    let v = |version| gguf_header(version, &[], &[]);
    assert!(parse_all(&v(2)).is_ok());
    assert!(parse_all(&v(3)).is_ok());
    for bad in [0, 1, 4, 0x0300_0000] {
        assert!(
            matches!(
                parse_all(&v(bad)),
                Err(FormatError::UnsupportedVersion { .. })
            ),
            "{bad}"
        );
    }
    let mut m = v(3);
    m[0] = b'g';
    assert!(matches!(parse_all(&m), Err(FormatError::BadMagic { .. })));
}

/// A header with one KV of raw type id `ty` and raw value bytes `val`.
fn raw_kv(ty: u32, val: &[u8]) -> Vec<u8> {
    let mut f = gguf_header(3, &[], &[]);
    f[16..24].copy_from_slice(&1u64.to_le_bytes());
    f.extend_from_slice(&3u64.to_le_bytes());
    f.extend_from_slice(b"k.x");
    f.extend_from_slice(&ty.to_le_bytes());
    f.extend_from_slice(val);
    f
}

#[test]
fn metadata_rules() {
    let mut counts = gguf_header(3, &[], &[]);
    counts[8..16].copy_from_slice(&(gguf::MAX_TENSORS + 1).to_le_bytes());
    assert!(matches!(
        parse_all(&counts),
        Err(FormatError::CountTooLarge { what: "tensor", .. })
    ));
    let mut counts = gguf_header(3, &[], &[]);
    counts[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        parse_all(&counts),
        Err(FormatError::CountTooLarge { .. })
    ));

    assert!(matches!(
        parse_all(&raw_kv(13, &[0])),
        Err(FormatError::UnknownValueType { type_id: 13, .. })
    ));
    assert!(matches!(
        parse_all(&raw_kv(7, &[2])),
        Err(FormatError::BadBool { byte: 2, .. })
    ));
    assert!(parse_all(&raw_kv(7, &[1])).is_ok());
    // string longer than the file
    let mut s = 100u64.to_le_bytes().to_vec();
    s.extend_from_slice(b"abc");
    assert!(matches!(
        parse_all(&raw_kv(8, &s)),
        Err(FormatError::PastEndOfFile { .. })
    ));
    // string beyond the 256 MiB header cap in a (claimed) huge file
    let huge = raw_kv(8, &(300u64 << 20).to_le_bytes());
    assert!(matches!(
        parse(&huge, 1 << 40),
        Err(FormatError::HeaderTooLarge { .. })
    ));
    // invalid UTF-8 in a string value
    let mut s = 2u64.to_le_bytes().to_vec();
    s.extend_from_slice(&[0xc3, 0x28]);
    assert!(matches!(
        parse_all(&raw_kv(8, &s)),
        Err(FormatError::NotUtf8 { .. })
    ));
    // array with an absurd count: rejected before allocating
    let mut a = 0u32.to_le_bytes().to_vec();
    a.extend_from_slice(&(1u64 << 39).to_le_bytes());
    assert!(matches!(
        parse(&raw_kv(9, &a), 1 << 40),
        Err(FormatError::HeaderTooLarge { .. })
    ));
    let mut a = 8u32.to_le_bytes().to_vec();
    a.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        parse_all(&raw_kv(9, &a)),
        Err(FormatError::Overflow { .. })
    ));
    // nesting depth
    let mut deep = Vec::new();
    for _ in 0..=gguf::MAX_ARRAY_DEPTH {
        deep.extend_from_slice(&9u32.to_le_bytes());
        deep.extend_from_slice(&1u64.to_le_bytes());
    }
    deep.extend_from_slice(&0u32.to_le_bytes());
    deep.extend_from_slice(&0u64.to_le_bytes());
    assert!(matches!(
        parse_all(&raw_kv(9, &deep)),
        Err(FormatError::ArrayTooDeep { .. })
    ));
    // duplicate keys
    let kv = ("k".to_string(), GgufValue::U8(1));
    let dup = gguf_header(3, &[kv.clone(), kv], &[]);
    assert!(matches!(
        parse_all(&dup),
        Err(FormatError::DuplicateKey { .. })
    ));
}

#[test]
fn alignment_rules() {
    let with = |v: GgufValue| gguf_header(3, &[("general.alignment".into(), v)], &[]);
    assert_eq!(
        parse_all(&with(GgufValue::U32(16))).map(|h| h.alignment),
        Ok(16)
    );
    assert!(matches!(
        parse_all(&with(GgufValue::U32(0))),
        Err(FormatError::BadAlignment { alignment: 0 })
    ));
    assert!(matches!(
        parse_all(&with(GgufValue::U32(24))),
        Err(FormatError::BadAlignment { .. })
    ));
    assert!(matches!(
        parse_all(&with(GgufValue::U64(32))),
        Err(FormatError::WrongValueType { .. })
    ));
    assert_eq!(
        parse_all(&gguf_header(3, &[], &[])).map(|h| h.alignment),
        Ok(32)
    );
}

/// A file with the given raw tensor infos, padded with `data_len` data bytes.
fn with_tensors(infos: &[RawTensorInfo], data_len: u64) -> Vec<u8> {
    let mut f = gguf_header(3, &[], infos);
    let start = (f.len() as u64).next_multiple_of(32);
    f.resize((start + data_len) as usize, 0);
    f
}

#[test]
fn tensor_rules() {
    let t =
        |name: &str, dims: &[u64], ty: u32, off: u64| (name.to_string(), dims.to_vec(), ty, off);
    assert!(
        parse_all(&with_tensors(
            &[t("a", &[8], 0, 0), t("b", &[32], 8, 32)],
            66
        ))
        .is_ok()
    );
    let e = |infos: &[RawTensorInfo], len| parse_all(&with_tensors(infos, len));
    assert!(matches!(
        e(&[t("a", &[1; 9], 0, 0)], 4),
        Err(FormatError::TooManyDims { rank: 9, .. })
    ));
    assert!(matches!(
        e(&[t("a", &[8], 4, 0)], 64),
        Err(FormatError::UnknownGgmlType { type_id: 4, .. })
    ));
    assert!(matches!(
        e(&[t("a", &[8], 99, 0)], 64),
        Err(FormatError::UnknownGgmlType { .. })
    ));
    assert!(matches!(
        e(&[t("a", &[33], 2, 0)], 64),
        Err(FormatError::BlockMisaligned { dim0: 33, .. })
    ));
    assert!(matches!(
        e(&[t("a", &[8], 0, 16)], 64),
        Err(FormatError::OffsetMisaligned { offset: 16, .. })
    ));
    assert!(matches!(
        e(&[t("a", &[8], 0, 0)], 31),
        Err(FormatError::PastEndOfFile { .. })
    ));
    assert!(matches!(
        e(&[t("a", &[16], 0, 0), t("b", &[8], 0, 32)], 64),
        Err(FormatError::Overlap { .. })
    ));
    assert!(matches!(
        e(&[t("a", &[8], 0, 0), t("a", &[8], 0, 32)], 64),
        Err(FormatError::DuplicateTensor { .. })
    ));
    assert!(matches!(
        e(&[t("a", &[u64::MAX, 2], 0, 0)], 64),
        Err(FormatError::Overflow { .. })
    ));
    assert!(matches!(
        e(&[t("a", &[8], 0, u64::MAX - 31)], 64),
        Err(FormatError::Overflow { .. })
    ));
    // zero-length tensors may share an offset; gaps between tensors are allowed
    assert!(
        parse_all(&with_tensors(
            &[t("a", &[0], 0, 0), t("b", &[8], 0, 0), t("c", &[1], 0, 64)],
            68
        ))
        .is_ok()
    );
}

#[test]
fn ggml_type_table() {
    let table: [(u32, &str, u64, u64); 32] = [
        (0, "F32", 1, 4),
        (1, "F16", 1, 2),
        (2, "Q4_0", 32, 18),
        (3, "Q4_1", 32, 20),
        (6, "Q5_0", 32, 22),
        (7, "Q5_1", 32, 24),
        (8, "Q8_0", 32, 34),
        (9, "Q8_1", 32, 36),
        (10, "Q2_K", 256, 84),
        (11, "Q3_K", 256, 110),
        (12, "Q4_K", 256, 144),
        (13, "Q5_K", 256, 176),
        (14, "Q6_K", 256, 210),
        (15, "Q8_K", 256, 292),
        (16, "IQ2_XXS", 256, 66),
        (17, "IQ2_XS", 256, 74),
        (18, "IQ3_XXS", 256, 98),
        (19, "IQ1_S", 256, 50),
        (20, "IQ4_NL", 32, 18),
        (21, "IQ3_S", 256, 110),
        (22, "IQ2_S", 256, 82),
        (23, "IQ4_XS", 256, 136),
        (24, "I8", 1, 1),
        (25, "I16", 1, 2),
        (26, "I32", 1, 4),
        (27, "I64", 1, 8),
        (28, "F64", 1, 8),
        (29, "IQ1_M", 256, 56),
        (30, "BF16", 1, 2),
        (34, "TQ1_0", 256, 54),
        (35, "TQ2_0", 256, 66),
        (39, "MXFP4", 32, 17),
    ];
    for (id, name, block, bytes) in table {
        let t = GgmlType::from_id(id).expect("known id");
        assert_eq!(
            (t.name(), t.block_size(), t.bytes_per_block()),
            (name, block, bytes)
        );
        assert_eq!(t.is_quantized(), block > 1);
    }
    assert_eq!(weightlake_formats::ALL_GGML_TYPES.len(), table.len());
}

#[test]
fn alignment_written_by_builder() {
    let f = gguf_file(
        &[],
        &[("a", &[3], GgmlType::F32), ("b", &[5], GgmlType::F16)],
        128,
    );
    let h = parse_all(&f).expect("valid");
    assert_eq!(h.alignment, 128);
    assert_eq!(h.tensors[1].offset - h.tensors[0].offset, 128);
}

#[test]
fn real_tiny_gguf() {
    let Some(file) = real_file(TINY_GGUF) else {
        return;
    };
    let (res, rounds) = parse_streaming(&file);
    let h = res.expect("real gguf");
    println!(
        "tiny.gguf: v{} {} KVs, {} tensors, data at {}, {rounds} reads",
        h.version,
        h.metadata.len(),
        h.tensors.len(),
        h.data_offset
    );
    assert_eq!((h.version, h.tensors.len(), h.metadata.len()), (3, 21, 18));
    assert!(
        h.tensors
            .iter()
            .all(|t| matches!(t.ggml_type, GgmlType::F16 | GgmlType::F32))
    );
    let end = h
        .tensors
        .iter()
        .map(|t| t.offset + t.byte_len)
        .max()
        .expect("tensors");
    assert!(end <= file.len() as u64 && end + h.alignment > file.len() as u64);
    assert!(h.architecture().is_some());
}
