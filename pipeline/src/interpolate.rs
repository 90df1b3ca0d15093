//! `${param}`, `${env.NAME}` (and `${NAME}`) interpolation, done on the text
//! before parsing so that errors keep their line numbers.
//!
//! A name is looked up as a pipeline parameter first (declared under
//! `parameters:`, overridable with `--param`), then as an environment
//! variable; `${env.NAME}` is always the environment. `$${` writes `${`.
//! Parameters are read by a lenient first pass over the same text (every
//! `${…}` replaced by a placeholder), so their defaults must be literals: a
//! default that uses `${…}` is an error.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::SpecError;

/// Replace every `${…}` in `text`, going on past names that are neither a
/// parameter nor a set environment variable: returns the text with each of
/// them replaced by [`PLACEHOLDER`] (so the rest of the file can still be
/// checked), and an error naming each one's line and column. The text is
/// `None` when a `${` is never closed.
pub(crate) fn interpolate_all(
    text: &str,
    origin: &str,
    params: &BTreeMap<String, String>,
) -> (Option<String>, Vec<SpecError>) {
    let mut errors = Vec::new();
    let out = substitute(text, |name, line, column| match lookup(name, params) {
        Some(v) => v,
        None => {
            let message = match name.strip_prefix("env.") {
                Some(var) => format!("environment variable `{var}` is not set"),
                None if name.is_empty() => "empty `${}`".to_string(),
                None => format!(
                    "`${{{name}}}` is neither a pipeline parameter nor a set environment variable{}",
                    crate::validate::suggest(name, params.keys())
                ),
            };
            errors.push(SpecError {
                file: origin.into(),
                line,
                column,
                message,
            });
            PLACEHOLDER.to_string()
        }
    });
    match out {
        Err((line, column)) => {
            errors.push(SpecError {
                file: origin.into(),
                line,
                column,
                message: "unclosed `${`".into(),
            });
            (None, errors)
        }
        Ok(text) => (Some(text), errors),
    }
}

/// The `parameters:` block of `text` with its defaults, read leniently (any
/// `${…}` becomes a placeholder); empty when the file does not parse (the
/// strict parse reports why).
pub(crate) fn declared_parameters(text: &str) -> BTreeMap<String, String> {
    #[derive(Deserialize)]
    struct Only {
        #[serde(default)]
        parameters: Option<yaml_serde::Value>,
    }
    let Ok(lenient) = substitute(text, |_, _, _| PLACEHOLDER.to_string()) else {
        return BTreeMap::new();
    };
    let Ok(Only {
        parameters: Some(v),
    }) = yaml_serde::from_str::<Only>(&lenient)
    else {
        return BTreeMap::new();
    };
    let Some(map) = v.as_mapping() else {
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(k, v)| {
            let k = k.as_str()?.to_string();
            let v = match v {
                yaml_serde::Value::String(s) => s.clone(),
                yaml_serde::Value::Bool(b) => b.to_string(),
                yaml_serde::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((k, v))
        })
        .collect()
}

/// What the lenient pass writes for each `${…}`, and [`interpolate_all`] for
/// each name it cannot resolve.
pub(crate) const PLACEHOLDER: &str = "__weightlake_interpolated__";

/// Parameters whose default uses `${…}` (not supported), each with the line
/// and column of its name.
pub(crate) fn interpolated_defaults(
    text: &str,
    declared: &BTreeMap<String, String>,
    origin: &str,
) -> Vec<SpecError> {
    declared
        .iter()
        .filter(|(_, v)| v.contains(PLACEHOLDER))
        .map(|(name, _)| {
            let (line, column) = text
                .lines()
                .enumerate()
                .find_map(|(i, l)| {
                    let col = l.find(&format!("{name}:"))?;
                    l[col..].contains("${").then_some((i + 1, col + 1))
                })
                .unwrap_or((0, 0));
            SpecError {
                file: origin.into(),
                line,
                column,
                message: format!(
                    "parameter `{name}`: a default must be a literal, not use `${{…}}` \
                     (override it with --param {name}=VALUE instead)"
                ),
            }
        })
        .collect()
}

/// The environment variables `text` reads (`${env.NAME}`, and `${NAME}`
/// that is not a parameter in `params`), sorted, each once. An exported
/// Databricks job reads the pipeline again on the cluster, whose environment
/// is not this machine's.
pub fn environment_names(text: &str, params: &BTreeMap<String, String>) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    let _ = substitute(text, |name, _, _| {
        let var = match name.strip_prefix("env.") {
            Some(var) => Some(var),
            None if !name.is_empty() && !params.contains_key(name) => Some(name),
            None => None,
        };
        if let Some(var) = var {
            names.insert(var.to_string());
        }
        String::new()
    });
    names.into_iter().collect()
}

fn lookup(name: &str, params: &BTreeMap<String, String>) -> Option<String> {
    if let Some(var) = name.strip_prefix("env.") {
        return std::env::var(var).ok();
    }
    if let Some(v) = params.get(name) {
        return Some(v.clone());
    }
    if name.is_empty() {
        return None;
    }
    std::env::var(name).ok()
}

/// Replace each `${name}` by `value(name, line, column)`; `$${` escapes.
/// Err((line, column)) on an unclosed `${`.
fn substitute(
    text: &str,
    mut value: impl FnMut(&str, usize, usize) -> String,
) -> Result<String, (usize, usize)> {
    let mut out = String::with_capacity(text.len());
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(pos) = rest.find("${") {
            if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
                out.push_str(&rest[..pos - 1]);
                out.push_str("${");
                rest = &rest[pos + 2..];
                continue;
            }
            out.push_str(&rest[..pos]);
            let column = line.len() - rest.len() + pos + 1;
            let Some(end) = rest[pos..].find('}') else {
                return Err((lineno + 1, column));
            };
            let name = rest[pos + 2..pos + end].trim();
            out.push_str(&value(name, lineno + 1, column));
            rest = &rest[pos + end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interpolated text, or the errors.
    fn interpolate(
        text: &str,
        origin: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<String, crate::PipelineError> {
        match interpolate_all(text, origin, params) {
            (Some(text), errors) if errors.is_empty() => Ok(text),
            (_, errors) => Err(crate::PipelineError::Spec(errors)),
        }
    }

    #[test]
    fn environment_names_are_what_is_not_a_parameter() {
        let params = BTreeMap::from([("model".to_string(), "m".to_string())]);
        let text = "a: ${model}\nb: ${AWS_ENDPOINT_URL}\nc: ${env.HF_TOKEN} $${literal} ${AWS_ENDPOINT_URL}\n";
        assert_eq!(
            environment_names(text, &params),
            ["AWS_ENDPOINT_URL", "HF_TOKEN"]
        );
    }

    #[test]
    fn replaces_env_and_reports_missing_with_line() {
        // PATH is set in every test environment.
        let path = std::env::var("PATH").expect("PATH");
        let none = BTreeMap::new();
        let out = interpolate("a: ${env.PATH}\nb: $${keep}\n", "p.yaml", &none).expect("ok");
        assert_eq!(out, format!("a: {path}\nb: ${{keep}}\n"));
        let err = interpolate("a: 1\nb: ${WEIGHTLAKE_SURELY_UNSET_VAR}\n", "p.yaml", &none)
            .expect_err("missing");
        assert!(err.to_string().starts_with("p.yaml:2:4:"), "{err}");
        let err = interpolate("a: ${x\n", "p.yaml", &none).expect_err("unclosed");
        assert!(err.to_string().contains("p.yaml:1:4: unclosed"), "{err}");
    }

    #[test]
    fn parameters_win_over_environment_and_env_prefix_forces_environment() {
        let params = BTreeMap::from([("PATH".to_string(), "param".to_string())]);
        let path = std::env::var("PATH").expect("PATH");
        let out = interpolate("a: ${PATH}\nb: ${env.PATH}\n", "p.yaml", &params).expect("ok");
        assert_eq!(out, format!("a: param\nb: {path}\n"));
        let err = interpolate(
            "a: ${revison}\n",
            "p.yaml",
            &BTreeMap::from([("revision".into(), "x".into())]),
        )
        .expect_err("typo");
        assert!(err.to_string().contains("did you mean `revision`"), "{err}");
    }

    #[test]
    fn declared_parameters_are_read_leniently() {
        let text = "name: x\nparameters:\n  rev: main\n  n: 16\n  spot: true\nlake: ${env.NOPE_NOT_SET}\nstages: { a: { b: ${rev} } }\n";
        let p = declared_parameters(text);
        assert_eq!(p.get("rev").map(String::as_str), Some("main"));
        assert_eq!(p.get("n").map(String::as_str), Some("16"));
        assert_eq!(p.get("spot").map(String::as_str), Some("true"));
        assert!(declared_parameters("name: [unclosed\n").is_empty());
        let text = "parameters:\n  a: x\n  b: ${env.HOME}\n";
        let errs = interpolated_defaults(text, &declared_parameters(text), "p.yaml");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].column), (3, 3));
    }
}
