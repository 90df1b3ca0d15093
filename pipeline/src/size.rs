//! Byte sizes in YAML and on the command line: `16MiB`, `64 MB`, `1048576`.

use serde::{Deserialize, Deserializer};

/// Parse a byte size: an integer, or a number with a unit (B, KB, MB, GB, KiB,
/// MiB, GiB; case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size `{s}`: expected e.g. 16MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit `{other}` in `{s}`: use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    let v = n * mult as f64;
    if !(0.0..1e18).contains(&v) {
        return Err(format!("size `{s}` out of range"));
    }
    Ok(v as u64)
}

/// Serde helper: a size given as an integer or a string with a unit.
pub fn deserialize_opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    deserialize_number_or_text(d, |n| n, parse_size)
}

/// An optional value written as an integer (`from_number`) or as text
/// (`parse`, whose error message becomes serde's).
pub(crate) fn deserialize_number_or_text<'de, D: Deserializer<'de>, T>(
    d: D,
    from_number: impl FnOnce(u64) -> T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        Negative(i64),
        S(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::N(n)) => Ok(Some(from_number(n))),
        Some(Raw::Negative(n)) => Err(serde::de::Error::custom(format!(
            "must not be negative, got {n}"
        ))),
        Some(Raw::S(s)) => parse(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("64 MB"), Ok(64_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
