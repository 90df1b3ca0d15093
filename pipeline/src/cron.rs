//! Quartz cron expressions, as Databricks schedules take them: validated here
//! so that a bad schedule fails `validate`, not the deployment.
//!
//! Fields: seconds, minutes, hours, day-of-month, month, day-of-week, and an
//! optional year. Each takes `*`, numbers, `a-b` ranges, `a/n` or `*/n` steps
//! and `,` lists; months and weekdays also take names (`JAN`, `MON-FRI`);
//! day-of-month takes `L`, `L-n`, `nW`, `LW`; day-of-week takes `nL` and `n#k`.
//! Exactly one of day-of-month and day-of-week must be `?` (Quartz does not
//! support both).

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
    Year,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Self::Second => "seconds",
            Self::Minute => "minutes",
            Self::Hour => "hours",
            Self::DayOfMonth => "day-of-month",
            Self::Month => "month",
            Self::DayOfWeek => "day-of-week",
            Self::Year => "year",
        }
    }

    fn range(self) -> (u32, u32) {
        match self {
            Self::Second | Self::Minute => (0, 59),
            Self::Hour => (0, 23),
            Self::DayOfMonth => (1, 31),
            Self::Month => (1, 12),
            Self::DayOfWeek => (1, 7),
            Self::Year => (1970, 2099),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Self::Month => &MONTHS,
            Self::DayOfWeek => &DAYS,
            _ => &[],
        }
    }
}

/// Check a Quartz cron expression (6 or 7 fields). The error names the field
/// and the value at fault.
pub fn validate_quartz(expr: &str) -> Result<(), String> {
    let parts: Vec<&str> = expr.split_whitespace().collect();
    if !(6..=7).contains(&parts.len()) {
        return Err(format!(
            "quartz cron `{expr}` has {} fields; expected 6 or 7: seconds minutes hours \
             day-of-month month day-of-week [year], e.g. `0 0 3 * * ?`",
            parts.len()
        ));
    }
    let fields = [
        Field::Second,
        Field::Minute,
        Field::Hour,
        Field::DayOfMonth,
        Field::Month,
        Field::DayOfWeek,
        Field::Year,
    ];
    for (part, field) in parts.iter().zip(fields) {
        check_field(part, field)
            .map_err(|e| format!("quartz cron `{expr}`: {} field `{part}`: {e}", field.name()))?;
    }
    let (dom, dow) = (parts[3], parts[5]);
    match (dom == "?", dow == "?") {
        (true, true) => Err(format!(
            "quartz cron `{expr}`: only one of day-of-month and day-of-week may be `?`"
        )),
        (false, false) => Err(format!(
            "quartz cron `{expr}`: one of day-of-month and day-of-week must be `?` \
             (e.g. `0 0 3 * * ?` or `0 0 3 ? * MON`)"
        )),
        _ => Ok(()),
    }
}

fn check_field(text: &str, field: Field) -> Result<(), String> {
    if text == "?" {
        return if matches!(field, Field::DayOfMonth | Field::DayOfWeek) {
            Ok(())
        } else {
            Err("`?` is only allowed in day-of-month and day-of-week".into())
        };
    }
    for item in text.split(',') {
        check_item(item, field)?;
    }
    Ok(())
}

fn check_item(item: &str, field: Field) -> Result<(), String> {
    if item.is_empty() {
        return Err("empty list item".into());
    }
    let (lo, hi) = field.range();
    // Day-of-month specials: L, L-n, nW, LW.
    if field == Field::DayOfMonth {
        if item == "L" || item == "LW" {
            return Ok(());
        }
        if let Some(off) = item.strip_prefix("L-") {
            number(off, 0, 30)?;
            return Ok(());
        }
        if let Some(day) = item.strip_suffix('W') {
            number(day, lo, hi)?;
            return Ok(());
        }
    }
    // Day-of-week specials: L (= 7), nL, n#k.
    if field == Field::DayOfWeek {
        if item == "L" {
            return Ok(());
        }
        if let Some(day) = item.strip_suffix('L') {
            value(day, field)?;
            return Ok(());
        }
        if let Some((day, k)) = item.split_once('#') {
            value(day, field)?;
            number(k, 1, 5)?;
            return Ok(());
        }
    }
    let (base, step) = match item.split_once('/') {
        Some((b, s)) => (b, Some(s)),
        None => (item, None),
    };
    if let Some(s) = step {
        number(s, 1, hi.max(1)).map_err(|e| format!("step `{s}`: {e}"))?;
    }
    if base == "*" {
        return Ok(());
    }
    match base.split_once('-') {
        // Quartz allows wrapping ranges (e.g. FRI-MON, 22-2).
        Some((a, b)) => value(a, field).and(value(b, field)).map(|_| ()),
        None => value(base, field).map(|_| ()),
    }
}

/// A number or (for month / day-of-week) a name, within the field's range.
fn value(text: &str, field: Field) -> Result<u32, String> {
    let (lo, hi) = field.range();
    let upper = text.to_ascii_uppercase();
    if let Some(i) = field.names().iter().position(|n| *n == upper) {
        return Ok(i as u32 + 1);
    }
    number(text, lo, hi).map_err(|e| {
        if field.names().is_empty() {
            e
        } else {
            format!("{e} or one of {}", field.names().join(", "))
        }
    })
}

fn number(text: &str, lo: u32, hi: u32) -> Result<u32, String> {
    let n: u32 = text
        .parse()
        .ok()
        .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("`{text}` is not a number in {lo}..={hi}"))?;
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(format!("`{text}` is out of range {lo}..={hi}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_quartz_expressions() {
        for ok in [
            "0 0 3 * * ?",
            "0 0 3 * * ? *",
            "0 */15 * * * ?",
            "0 0/5 14,18 * * ?",
            "0 15 10 ? * MON-FRI",
            "0 15 10 L * ?",
            "0 15 10 L-2 * ?",
            "0 15 10 15W * ?",
            "0 15 10 ? * 6L 2026-2030",
            "0 15 10 ? * 6#3",
            "30 45 23 1 JAN,jul ?",
            "0 0 22-2 * * ?",
        ] {
            assert_eq!(validate_quartz(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_expressions() {
        for (bad, why) in [
            ("0 3 * * *", "5 fields"),
            ("0 0 3 * * ? * 1", "8 fields"),
            ("60 0 3 * * ?", "seconds"),
            ("0 60 3 * * ?", "minutes"),
            ("0 0 24 * * ?", "hours"),
            ("0 0 3 32 * ?", "day-of-month"),
            ("0 0 3 ? 13 MON", "month"),
            ("0 0 3 ? * 8", "day-of-week"),
            ("0 0 3 ? * FUNDAY", "day-of-week"),
            ("0 0 3 * * *", "must be `?`"),
            ("0 0 3 ? * ?", "only one"),
            ("? 0 3 * * ?", "seconds"),
            ("0 */0 * * * ?", "step"),
            ("0 0 3 * * ? 1900", "year"),
            ("0 0 3 1,,2 * ?", "empty"),
        ] {
            let e = validate_quartz(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
