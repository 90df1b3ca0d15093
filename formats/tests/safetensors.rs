//! Safetensors header and shard index parsing: valid files, every rule broken
//! once, and the real MiniLM checkpoint when present.

mod common;

use common::{MINILM, real_file, safetensors_file, with_header};
use weightlake_formats::safetensors::{self, parse_header, parse_index};
use weightlake_formats::{Dtype, FormatError};

fn parse(file: &[u8]) -> Result<safetensors::SafetensorsHeader, FormatError> {
    parse_header(file, file.len() as u64)
}

#[test]
fn valid_file_in_offset_order() {
    let file = safetensors_file(
        &[
            ("b", "BF16", &[2, 3], 12),
            ("a", "F32", &[4], 16),
            ("scalar", "I64", &[], 8),
            ("empty", "F16", &[0, 5], 0),
            ("f4", "F4", &[4], 2),
            ("e8", "F8_E8M0", &[3], 3),
        ],
        r#""__metadata__":{"format":"pt","k":"v"}"#,
    );
    let h = parse(&file).expect("valid");
    let names: Vec<_> = h.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["b", "a", "scalar", "empty", "f4", "e8"]);
    let start = 8 + h.header_len;
    assert_eq!(h.data_start(), start);
    assert_eq!(h.tensors[0].data_offset, start);
    assert_eq!(h.tensors[1].data_offset, start + 12);
    assert_eq!(h.tensors[1].dtype, Dtype::F32);
    assert_eq!(h.tensors[2].shape, Vec::<u64>::new());
    assert_eq!(h.tensors[3].byte_len, 0);
    assert_eq!(h.tensors[4].byte_len, 2);
    assert_eq!(h.data_len() + start, file.len() as u64);
    assert_eq!(h.raw_header, file[8..start as usize]);
    let meta = h.metadata.expect("metadata");
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
    assert_eq!(h.tensors[0].elements(), 6);
}

#[test]
fn header_len_and_need_more() {
    assert_eq!(
        safetensors::header_len(&[1, 2, 3]),
        Err(FormatError::NeedMore { needed: 8 })
    );
    assert_eq!(
        parse_header(&[], 8),
        Err(FormatError::NeedMore { needed: 8 })
    );
    assert!(matches!(
        parse_header(&[], 7),
        Err(FormatError::PastEndOfFile {
            end: 8,
            file_size: 7,
            ..
        })
    ));
    let too_big = (safetensors::MAX_HEADER_LEN + 1).to_le_bytes();
    assert!(matches!(
        safetensors::header_len(&too_big),
        Err(FormatError::HeaderTooLarge { .. })
    ));
    let file = safetensors_file(&[("a", "U8", &[3], 3)], "");
    let hl = safetensors::header_len(&file).expect("len");
    let need = 8 + hl;
    assert_eq!(
        parse_header(&file[..need as usize - 1], file.len() as u64),
        Err(FormatError::NeedMore { needed: need })
    );
    assert!(parse_header(&file[..need as usize], file.len() as u64).is_ok());
    // header past the end of the file
    assert!(matches!(
        parse_header(&file, need - 1),
        Err(FormatError::PastEndOfFile { .. })
    ));
}

#[test]
fn other_kinds_of_file_under_a_safetensors_name_are_named() {
    let pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n";
    for (start, what) in [
        (
            &[0x80u8, 2, 0x7d, 0x71, 0, 0x28, 0x58, 1][..],
            "a Python pickle",
        ),
        (b"PK\x03\x04\x14\0\0\0", "a zip archive"),
        (b"GGUF\x03\0\0\0", "a GGUF file"),
        (&pointer[..], "a Git LFS pointer"),
        (b"<!DOCTYPE html><html>", "an HTML page"),
        (b"\xef\xbb\xbf\n<!DOCTYPE html>", "an HTML or XML page"),
        (b"  <html><body>", "an HTML or XML page"),
    ] {
        // Tensorise reads the length prefix alone first: 8 bytes must do.
        let e = safetensors::header_len(&start[..8])
            .expect_err(what)
            .to_string();
        assert!(e.contains(what), "{e}");
        let e = parse(start).expect_err(what).to_string();
        assert!(
            e.starts_with("not a safetensors file: it starts like ") && e.contains(what),
            "{e}"
        );
    }
}

/// Parses a file whose header is `json` and whose data section is `data_len` bytes.
fn parse_json(json: &str, data_len: u64) -> Result<safetensors::SafetensorsHeader, FormatError> {
    parse(&with_header(json.as_bytes(), data_len))
}

#[test]
fn structural_rules() {
    let e = parse_json("[]", 0);
    assert_eq!(e, Err(FormatError::HeaderNotObject { found: Some(b'[') }));
    assert_eq!(
        parse_json("", 0),
        Err(FormatError::HeaderNotObject { found: None })
    );
    assert!(matches!(
        parse_json("{", 0),
        Err(FormatError::InvalidJson { .. })
    ));
    assert!(matches!(
        parse_json("{} x", 0),
        Err(FormatError::InvalidJson { .. })
    ));
    assert!(parse_json("{}", 0).expect("empty").tensors.is_empty());
    let mut bad = with_header(b"{\"\xff\":1}", 0);
    bad.truncate(bad.len());
    assert!(matches!(
        parse(&bad),
        Err(FormatError::NotUtf8 { offset: 2, .. })
    ));
    // metadata: null accepted, non-string values and duplicates rejected
    assert!(
        parse_json(r#"{"__metadata__":null}"#, 0)
            .expect("null")
            .metadata
            .is_none()
    );
    assert!(matches!(
        parse_json(r#"{"__metadata__":{"a":1}}"#, 0),
        Err(FormatError::InvalidJson { .. })
    ));
    assert!(matches!(
        parse_json(r#"{"__metadata__":{"a":"1","a":"2"}}"#, 0),
        Err(FormatError::DuplicateKey { key, .. }) if key == "a"
    ));
    assert!(matches!(
        parse_json(r#"{"__metadata__":{},"__metadata__":{}}"#, 0),
        Err(FormatError::DuplicateKey { key, .. }) if key == "__metadata__"
    ));
}

#[test]
fn tensor_entry_rules() {
    let t = |body: &str, data_len| parse_json(&format!("{{\"t\":{{{body}}}}}",), data_len);
    assert!(t(r#""dtype":"U8","shape":[2],"data_offsets":[0,2]"#, 2).is_ok());
    assert!(matches!(
        t(r#""dtype":"U8","shape":[2],"data_offsets":[0,2],"x":1"#, 2),
        Err(FormatError::UnknownField { field, .. }) if field == "x"
    ));
    assert!(matches!(
        t(r#""dtype":"U8","dtype":"U8","shape":[2],"data_offsets":[0,2]"#, 2),
        Err(FormatError::DuplicateKey { key, .. }) if key == "dtype"
    ));
    assert!(matches!(
        t(r#""dtype":"U8","data_offsets":[0,2]"#, 2),
        Err(FormatError::MissingField { field: "shape", .. })
    ));
    assert!(matches!(
        t(r#""dtype":"Q4","shape":[2],"data_offsets":[0,2]"#, 2),
        Err(FormatError::UnknownDtype { dtype, .. }) if dtype == "Q4"
    ));
    assert!(matches!(
        t(r#""dtype":"U8","shape":[-2],"data_offsets":[0,2]"#, 2),
        Err(FormatError::InvalidJson { .. })
    ));
    assert!(matches!(
        t(r#""dtype":"U8","shape":[2],"data_offsets":[2,0]"#, 2),
        Err(FormatError::BadOffsets { .. })
    ));
    assert!(matches!(
        t(r#""dtype":"U8","shape":[2],"data_offsets":[0,1,2]"#, 2),
        Err(FormatError::BadOffsets { .. })
    ));
    assert!(matches!(
        t(r#""dtype":"F32","shape":[2],"data_offsets":[0,2]"#, 2),
        Err(FormatError::ByteLenMismatch {
            expected: 8,
            actual: 2,
            ..
        })
    ));
    assert!(matches!(
        t(
            r#""dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,2]"#,
            2
        ),
        Err(FormatError::Overflow { .. })
    ));
    assert!(matches!(
        t(
            r#""dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,2]"#,
            2
        ),
        Err(FormatError::Overflow { .. })
    ));
    assert!(matches!(
        t(r#""dtype":"F4","shape":[3],"data_offsets":[0,2]"#, 2),
        Err(FormatError::PartialByte { bits: 12, .. })
    ));
    assert!(matches!(
        t(r#""dtype":"U8","shape":[4],"data_offsets":[0,4]"#, 2),
        Err(FormatError::OutOfBounds {
            end: 4,
            data_len: 2,
            ..
        })
    ));
    let dims = vec!["1"; 65].join(",");
    assert!(matches!(
        t(
            &format!(r#""dtype":"U8","shape":[{dims}],"data_offsets":[0,1]"#),
            1
        ),
        Err(FormatError::TooManyDims { rank: 65, .. })
    ));
}

#[test]
fn tiling_rules() {
    let entry = |n: &str, b: u64, e: u64| {
        format!(
            r#""{n}":{{"dtype":"U8","shape":[{}],"data_offsets":[{b},{e}]}}"#,
            e - b
        )
    };
    let two = |a: String, b: String, len| parse_json(&format!("{{{a},{b}}}"), len);
    assert!(two(entry("a", 0, 4), entry("b", 4, 6), 6).is_ok());
    assert!(matches!(
        two(entry("a", 0, 4), entry("b", 3, 6), 6),
        Err(FormatError::Overlap { first, second, first_end: 4, second_begin: 3 }) if first == "a" && second == "b"
    ));
    assert!(matches!(
        two(entry("a", 0, 4), entry("b", 5, 6), 6),
        Err(FormatError::Gap { begin: 4, end: 5, after: Some(a) }) if a == "a"
    ));
    assert!(matches!(
        two(entry("a", 1, 4), entry("b", 4, 6), 6),
        Err(FormatError::Gap {
            begin: 0,
            end: 1,
            after: None
        })
    ));
    assert!(matches!(
        two(entry("a", 0, 4), entry("b", 4, 6), 8),
        Err(FormatError::Gap {
            begin: 6,
            end: 8,
            ..
        })
    ));
    assert!(matches!(
        parse_json(&format!("{{{},{}}}", entry("a", 0, 4), entry("a", 4, 6)), 6),
        Err(FormatError::DuplicateKey { key, .. }) if key == "a"
    ));
    // no tensors but data bytes present
    assert!(matches!(
        parse_json("{}", 3),
        Err(FormatError::Gap {
            begin: 0,
            end: 3,
            ..
        })
    ));
}

#[test]
fn dtype_table() {
    let sizes = [
        ("BOOL", 8),
        ("U8", 8),
        ("I8", 8),
        ("U16", 16),
        ("I16", 16),
        ("F16", 16),
        ("BF16", 16),
        ("U32", 32),
        ("I32", 32),
        ("F32", 32),
        ("U64", 64),
        ("I64", 64),
        ("F64", 64),
        ("F8_E4M3", 8),
        ("F8_E5M2", 8),
        ("F8_E8M0", 8),
        ("F4", 4),
        ("F6_E2M3", 6),
        ("F6_E3M2", 6),
        ("C64", 64),
    ];
    for (name, bits) in sizes {
        let d: Dtype = name.parse().expect("known dtype");
        assert_eq!((d.name(), d.size_bits()), (name, bits));
    }
    assert!(Dtype::BF16.is_float() && !Dtype::U8.is_float() && !Dtype::Bool.is_float());
}

#[test]
fn shard_index() {
    let ok = br#"{"metadata":{"total_size":30},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#;
    let ix = parse_index(ok).expect("valid index");
    assert_eq!(ix.total_size, Some(30));
    assert_eq!(ix.shards().len(), 2);
    assert_eq!(ix.weight_map["b"], "model-00002-of-00002.safetensors");
    assert!(
        parse_index(br#"{"weight_map":{}}"#)
            .expect("no metadata")
            .metadata
            .is_empty()
    );
    for (doc, want) in [
        (&br#"{"metadata":{}}"#[..], "missing"),
        (br#"{"weight_map":{"a":"../x.safetensors"}}"#, "name"),
        (br#"{"weight_map":{"a":"/abs.safetensors"}}"#, "name"),
        (br#"{"weight_map":{"a":"x","a":"y"}}"#, "dup"),
        (br#"{"weight_map":{},"weight_map":{}}"#, "dup"),
        (br#"{"weight_map":{"a":1}}"#, "json"),
        (br#"[1]"#, "json"),
    ] {
        let e = parse_index(doc).expect_err(want);
        let ok = match want {
            "missing" => matches!(e, FormatError::MissingDocField { .. }),
            "name" => matches!(e, FormatError::BadShardName { .. }),
            "dup" => matches!(e, FormatError::DuplicateKey { .. }),
            _ => matches!(e, FormatError::InvalidJson { .. }),
        };
        assert!(ok, "{want}: {e}");
    }
}

#[test]
fn real_minilm_checkpoint() {
    let Some(file) = real_file(MINILM) else {
        return;
    };
    // Read only as much as the header needs, as a streaming caller would.
    let hl = safetensors::header_len(&file[..8]).expect("len");
    let h = parse_header(&file[..(8 + hl) as usize], file.len() as u64).expect("real header");
    assert_eq!(h.tensors.len(), 104);
    assert_eq!(
        h.metadata
            .as_ref()
            .and_then(|m| m.get("format"))
            .map(String::as_str),
        Some("pt")
    );
    assert_eq!(h.data_start() + h.data_len(), file.len() as u64);
    assert!(
        h.tensors
            .iter()
            .all(|t| t.dtype == Dtype::F32 || t.name == "embeddings.position_ids")
    );
    let emb = h
        .tensor("embeddings.word_embeddings.weight")
        .expect("embeddings");
    assert_eq!(emb.shape, [30522, 384]);
    assert!(
        h.tensors
            .windows(2)
            .all(|w| w[0].data_offset + w[0].byte_len == w[1].data_offset)
    );
}
