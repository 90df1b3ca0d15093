//! Every parse error of a pipeline file, not only the first.
//!
//! serde stops at the first value it cannot read, so a file with a typo in
//! three stages took three rounds of `validate`. When the whole file fails to
//! parse, each stage and each source is parsed again on its own, and the rest
//! of the file without them, so one run lists the type errors of all of them.
//! (Checks after parsing, such as unknown dependencies, need a parsed file and
//! come once these are fixed.)

use yaml_serde::{Mapping, Value};

use crate::SpecError;
use crate::spec::{PipelineSpec, StageSpec};
use crate::validate::locate_path;
use weightlake_connectors::source::SourceSpec;

/// The errors of `text` (already known not to parse; `first` is serde's
/// error for the whole file, with its position), one per stage, source or
/// top-level problem, in file order. `fix` turns serde's message into ours.
pub(crate) fn all_parse_errors(
    text: &str,
    origin: &str,
    first: SpecError,
    fix: impl Fn(&str) -> String,
) -> Vec<SpecError> {
    let Ok(Value::Mapping(top)) = yaml_serde::from_str::<Value>(text) else {
        return vec![first];
    };
    let mut found = Vec::new();
    let at = |prefix: &[&str], msg: &str| {
        let mut path: Vec<&str> = prefix.to_vec();
        path.extend(key_path(msg));
        let (line, column) = locate_path(text, &path);
        SpecError {
            file: origin.to_string(),
            line,
            column,
            message: fix(&join_path(prefix, msg)),
        }
    };
    for (section, parse) in [
        (
            "stages",
            parse_one::<StageSpec> as fn(&Value) -> Option<String>,
        ),
        ("sources", parse_one::<SourceSpec>),
    ] {
        let Some(Value::Mapping(entries)) = top.get(section) else {
            continue;
        };
        for (name, entry) in entries {
            let Some(name) = name.as_str() else { continue };
            if let Some(msg) = parse(entry) {
                // A value a field's own parser refused (a size, a duration)
                // comes without the field's name: find the field holding it.
                match field_holding(entry, &msg) {
                    Some(field) => found.push(at(&[section, name], &format!("{field}: {msg}"))),
                    None => found.push(at(&[section, name], &msg)),
                }
            }
        }
    }
    // The rest of the file, with empty stages and sources.
    let mut rest = Mapping::new();
    for (k, v) in &top {
        let emptied = matches!(k.as_str(), Some("stages" | "sources"));
        let v = if emptied {
            Value::Mapping(Mapping::new())
        } else {
            v.clone()
        };
        rest.insert(k.clone(), v);
    }
    if let Some(msg) = parse_one::<PipelineSpec>(&Value::Mapping(rest)) {
        found.push(at(&[], &msg));
    }
    // serde's own position is the better one for the error it found first.
    let mut seen_first = false;
    for e in &mut found {
        if e.message == first.message {
            *e = first.clone();
            seen_first = true;
        } else if names_field_of(&e.message, &first.message) {
            // The same error, with the field serde could not name.
            seen_first = true;
        }
    }
    if !seen_first {
        found.push(first);
    }
    found.sort_by_key(|e| (e.line == 0, e.line, e.column));
    found.dedup_by(|a, b| a.message == b.message);
    found
}

/// The keys serde's message points at: its `a.b: ` path, then the name of
/// an unknown field (`unknown field \`x\``).
fn key_path(msg: &str) -> Vec<&str> {
    let (path, rest) = match msg.split_once(": ") {
        Some((p, rest)) if !p.is_empty() && !p.contains(' ') => (Some(p), rest),
        _ => (None, msg),
    };
    let mut keys: Vec<&str> = path.map(|p| p.split('.').collect()).unwrap_or_default();
    if let Some(field) = rest
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        keys.push(field);
    }
    keys
}

/// Whether `ours` is `theirs` with one more key in its path
/// (`stages.i.chunk_size: X` for `stages.i: X`).
fn names_field_of(ours: &str, theirs: &str) -> bool {
    let (Some((our_path, our_rest)), Some((their_path, their_rest))) =
        (ours.split_once(": "), theirs.split_once(": "))
    else {
        return false;
    };
    our_rest == their_rest
        && our_path
            .strip_prefix(their_path)
            .is_some_and(|tail| tail.starts_with('.') && !tail[1..].contains('.'))
}

/// The key of `entry` whose value is the last `quoted` text of `msg`, when
/// `msg` is a value a parser of ours refused (`invalid size \`lots\``).
fn field_holding(entry: &Value, msg: &str) -> Option<String> {
    if !["invalid size", "invalid duration", "size `"]
        .iter()
        .any(|p| msg.contains(p))
    {
        return None;
    }
    let value = msg.rsplit('`').nth(1)?;
    let Value::Mapping(m) = entry else {
        return None;
    };
    m.iter().find_map(|(k, v)| {
        let held = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        (held == value).then(|| k.as_str().map(str::to_string))?
    })
}

/// `msg` under `prefix`: `stages.a.` + `parallelism: …`, or `stages.a: …`.
fn join_path(prefix: &[&str], msg: &str) -> String {
    if prefix.is_empty() {
        return msg.to_string();
    }
    let prefix = prefix.join(".");
    match msg.split_once(": ") {
        Some((p, _)) if !p.is_empty() && !p.contains(' ') => format!("{prefix}.{msg}"),
        _ => format!("{prefix}: {msg}"),
    }
}

/// serde's message for `value` read as a `T`, without its position (the
/// position inside a re-serialised piece means nothing to the user).
fn parse_one<T: serde::de::DeserializeOwned>(value: &Value) -> Option<String> {
    let piece = yaml_serde::to_string(value).ok()?;
    let err = yaml_serde::from_str::<T>(&piece).err()?;
    let msg = err.to_string();
    Some(match msg.rfind(" at line ") {
        Some(at) => msg[..at].to_string(),
        None => msg,
    })
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    #[test]
    fn type_errors_of_every_stage_and_source_come_at_once() {
        let yaml = "name: t\n\
                    lake: ./lake\n\
                    soruce: 1\n\
                    sources:\n  \
                      s: { local: { path: ./m, inclde: ['*'] } }\n\
                    stages:\n  \
                      a: { job: ingest, sources: [s], parallelism: lots }\n  \
                      b: { job: tensorize, depends_on: [a] }\n  \
                      c: { job: ingest, sources: [s] }\n";
        let err = load_str(yaml, "t.yaml")
            .expect_err("four mistakes")
            .to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 4, "{err}");
        assert!(
            lines[0].starts_with("t.yaml:3:") && lines[0].contains("soruce"),
            "{err}"
        );
        assert!(lines[1].contains("did you mean `include`"), "{err}");
        assert!(
            lines[1].starts_with("t.yaml:5:") && lines[1].contains("inclde"),
            "{err}"
        );
        assert!(
            lines[2].starts_with("t.yaml:7:") && lines[2].contains("stages.a.parallelism"),
            "{err}"
        );
        assert!(
            lines[3].starts_with("t.yaml:8:") && lines[3].contains("`tensorize`"),
            "{err}"
        );
        assert!(!err.contains(" at line "), "{err}");
    }
}
