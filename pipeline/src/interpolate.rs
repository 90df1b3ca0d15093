//! `${env.NAME}` (and `${NAME}`) interpolation from the environment, done on the
//! text before parsing so that errors keep their line numbers.

use crate::{PipelineError, SpecError};

/// Replace `${env.NAME}` / `${NAME}` with environment values; `$${` escapes.
/// A variable that is not set is an error naming its line.
pub(crate) fn interpolate(text: &str, origin: &str) -> Result<String, PipelineError> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
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
            let Some(end) = rest[pos..].find('}') else {
                errors.push(SpecError {
                    file: origin.into(),
                    line: lineno + 1,
                    column: line.len() - rest.len() + pos + 1,
                    message: "unclosed `${`".into(),
                });
                rest = "";
                break;
            };
            let name = &rest[pos + 2..pos + end];
            let var = name.strip_prefix("env.").unwrap_or(name);
            match std::env::var(var) {
                Ok(v) => out.push_str(&v),
                Err(_) => errors.push(SpecError {
                    file: origin.into(),
                    line: lineno + 1,
                    column: line.len() - rest.len() + pos + 1,
                    message: format!("environment variable `{var}` is not set"),
                }),
            }
            rest = &rest[pos + end + 1..];
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(PipelineError::Spec(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_env_and_reports_missing_with_line() {
        // PATH is set in every test environment.
        let path = std::env::var("PATH").expect("PATH");
        let out = interpolate("a: ${env.PATH}\nb: $${keep}\n", "p.yaml").expect("ok");
        assert_eq!(out, format!("a: {path}\nb: ${{keep}}\n"));
        let err = interpolate("a: 1\nb: ${WEIGHTLAKE_SURELY_UNSET_VAR}\n", "p.yaml")
            .expect_err("missing");
        assert!(err.to_string().starts_with("p.yaml:2:4:"), "{err}");
    }
}
