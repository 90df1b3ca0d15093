//! Property-based fuzzing of the header parsers: arbitrary bytes and mutated
//! valid headers must give `Ok` or `Err`, never a panic, and `Ok` results
//! must satisfy the documented invariants. Case counts follow
//! `PROPTEST_CASES` (default 256); each test prints its case count and time.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use proptest::prelude::*;
use weightlake_formats::{FormatError, gguf, safetensors};

/// A mutation of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    SetU64(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..).prop_map(|(p, b)| Mutation::Flip(p, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        2 => any::<usize>().prop_map(Mutation::Delete),
        1 => (any::<usize>(), prop_oneof![Just(0u64), Just(u64::MAX), Just(1 << 32), any::<u64>()])
            .prop_map(|(p, v)| Mutation::SetU64(p, v)),
    ]
}

fn apply(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = bytes.len().max(1);
        match *m {
            Mutation::Flip(p, b) if !bytes.is_empty() => bytes[p % n] ^= b,
            Mutation::Insert(p, b) => bytes.insert(p % (bytes.len() + 1), b),
            Mutation::Delete(p) if !bytes.is_empty() => {
                bytes.remove(p % n);
            }
            Mutation::SetU64(p, v) if bytes.len() >= 8 => {
                let at = p % (bytes.len() - 7);
                bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }
    bytes
}

/// The file size handed to the parser: the true length, or a lie.
fn file_size() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![3 => Just(None), 1 => any::<u64>().prop_map(Some), 1 => (0u64..1 << 20).prop_map(Some)]
}

fn valid_safetensors() -> Vec<u8> {
    common::safetensors_file(
        &[
            ("w", "BF16", &[4, 4], 32),
            ("b", "F32", &[4], 16),
            ("i", "I64", &[2], 16),
        ],
        r#""__metadata__":{"format":"pt"}"#,
    )
}

/// Checks one input; returns whether it parsed.
fn check_safetensors(bytes: &[u8], size: Option<u64>) -> Result<bool, TestCaseError> {
    let size = size.unwrap_or(bytes.len() as u64);
    match safetensors::parse_header(bytes, size) {
        Ok(h) => {
            let mut end = h.data_start();
            for t in &h.tensors {
                prop_assert_eq!(t.data_offset, end);
                end += t.byte_len;
            }
            prop_assert_eq!(end, size);
            return Ok(true);
        }
        Err(FormatError::NeedMore { needed }) => {
            prop_assert!(needed > bytes.len() as u64 && needed <= size)
        }
        Err(_) => {}
    }
    Ok(false)
}

/// Checks one input; returns whether it parsed.
fn check_gguf(bytes: &[u8], size: Option<u64>) -> Result<bool, TestCaseError> {
    let size = size.unwrap_or(bytes.len() as u64);
    match gguf::parse(bytes, size) {
        Ok(h) => {
            prop_assert!(h.header_len_bytes <= bytes.len() as u64);
            prop_assert!(h.data_offset.is_multiple_of(h.alignment));
            for t in &h.tensors {
                prop_assert!(t.offset >= h.data_offset && t.offset + t.byte_len <= size);
            }
            return Ok(true);
        }
        Err(FormatError::NeedMore { needed }) => {
            prop_assert!(
                needed > bytes.len() as u64 && needed <= gguf::MAX_HEADER_BYTES && needed <= size
            )
        }
        Err(_) => {}
    }
    Ok(false)
}

/// Case and success counters of one fuzz test.
struct Counts {
    cases: AtomicU64,
    parsed: AtomicU64,
}

impl Counts {
    const fn new() -> Self {
        Counts {
            cases: AtomicU64::new(0),
            parsed: AtomicU64::new(0),
        }
    }

    fn record(&self, parsed: bool) {
        self.cases.fetch_add(1, Ordering::Relaxed);
        self.parsed.fetch_add(u64::from(parsed), Ordering::Relaxed);
    }
}

/// Reports a test's counters and elapsed time when dropped.
struct Tally(&'static str, &'static Counts, Instant);

impl Drop for Tally {
    fn drop(&mut self) {
        println!(
            "{}: {} cases ({} parsed Ok) in {:.2?}",
            self.0,
            self.1.cases.load(Ordering::Relaxed),
            self.1.parsed.load(Ordering::Relaxed),
            self.2.elapsed()
        );
    }
}

static ST_RANDOM: Counts = Counts::new();
static ST_MUTATED: Counts = Counts::new();
static GG_RANDOM: Counts = Counts::new();
static GG_MUTATED: Counts = Counts::new();
static ST_NUMBERS: Counts = Counts::new();

/// Replaces the `which`-th run of ASCII digits in `json` with `value`.
fn replace_number(json: &str, which: usize, value: &str) -> String {
    let mut runs = Vec::new();
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            runs.push(start..i);
        } else {
            i += 1;
        }
    }
    match runs.get(which % runs.len().max(1)) {
        Some(r) => format!("{}{value}{}", &json[..r.start], &json[r.end..]),
        None => json.to_owned(),
    }
}

#[test]
fn fuzz_safetensors_random() {
    let _t = Tally("safetensors random bytes", &ST_RANDOM, Instant::now());
    proptest!(|(mut bytes in prop::collection::vec(any::<u8>(), 0..512), len in 0u64..600, size in file_size())| {
        // Make the length prefix plausible half of the time so the JSON path is reached.
        if bytes.len() >= 8 && len % 2 == 0 {
            let plausible = len % (bytes.len() as u64 - 7);
            bytes[..8].copy_from_slice(&plausible.to_le_bytes());
        }
        ST_RANDOM.record(check_safetensors(&bytes, size)?);
    });
}

#[test]
fn fuzz_safetensors_mutated() {
    let _t = Tally("safetensors mutated header", &ST_MUTATED, Instant::now());
    let valid = valid_safetensors();
    proptest!(|(muts in prop::collection::vec(mutation(), 1..6), size in file_size())| {
        ST_MUTATED.record(check_safetensors(&apply(valid.clone(), &muts), size)?);
    });
}

#[test]
fn fuzz_safetensors_numbers() {
    let _t = Tally("safetensors numeric edits", &ST_NUMBERS, Instant::now());
    let valid = valid_safetensors();
    let hl = safetensors::header_len(&valid).expect("len") as usize;
    let json = std::str::from_utf8(&valid[8..8 + hl])
        .expect("utf8")
        .trim_end()
        .to_owned();
    let data_len = (valid.len() - 8 - hl) as u64;
    let number = prop_oneof![
        (0u64..80).prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("1.5".to_string()),
        Just("1e3".to_string()),
    ];
    proptest!(|(edits in prop::collection::vec((any::<usize>(), number), 1..4), extra in 0u64..4)| {
        let mut j = json.clone();
        for (which, value) in &edits {
            j = replace_number(&j, *which, value);
        }
        let file = common::with_header(j.as_bytes(), data_len + extra);
        ST_NUMBERS.record(check_safetensors(&file, None)?);
    });
}

#[test]
fn fuzz_gguf_random() {
    let _t = Tally("gguf random bytes", &GG_RANDOM, Instant::now());
    proptest!(|(mut bytes in prop::collection::vec(any::<u8>(), 0..512), version in 2u32..4, size in file_size())| {
        // A valid magic and version half of the time so the body is reached.
        if bytes.len() >= 8 && bytes[0] % 2 == 0 {
            bytes[..4].copy_from_slice(b"GGUF");
            bytes[4..8].copy_from_slice(&version.to_le_bytes());
        }
        GG_RANDOM.record(check_gguf(&bytes, size)?);
    });
}

#[test]
fn fuzz_gguf_mutated() {
    let _t = Tally("gguf mutated header", &GG_MUTATED, Instant::now());
    let valid = common::sample_gguf();
    proptest!(|(muts in prop::collection::vec(mutation(), 1..6), size in file_size(), cut in any::<usize>())| {
        let bytes = apply(valid.clone(), &muts);
        GG_MUTATED.record(check_gguf(&bytes, size)?);
        // Also a truncated prefix of the mutated file against its full size.
        let prefix = &bytes[..cut % (bytes.len() + 1)];
        check_gguf(prefix, Some(size.unwrap_or(bytes.len() as u64)))?;
    });
}

#[test]
fn valid_inputs_parse() {
    assert!(
        safetensors::parse_header(&valid_safetensors(), valid_safetensors().len() as u64).is_ok()
    );
    let g = common::sample_gguf();
    assert!(gguf::parse(&g, g.len() as u64).is_ok());
}
