//! Quality gates: named SQL boolean expressions over a model's silver tensor
//! rows and its metrics, each with an action like a Databricks expectation.
//!
//! The expression is evaluated by DataFusion over one relation, `gate_input`:
//! every `silver.tensors` row of the model (the exact rows of its manifest),
//! with each metric added as a constant column. An aggregate expression
//! (`max(nan_count) = 0`, `avg(rel_l2_change) < 0.01`) yields one row; any other
//! expression (`nan_count = 0`, `eval_loss < 2.1`) must hold on every row. A
//! NULL result, or no row at all, fails: gates fail closed.
//!
//! Only a single expression is accepted (it is parsed as one, never spliced
//! into a statement).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::lit;
use serde::{Deserialize, Serialize};
use weightlake_schemas::silver;

use crate::sql::LakeSession;
use crate::view::Manifest;
use crate::{JobError, Result};

/// What a failed gate does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateAction {
    /// Record the failure and promote anyway.
    Warn,
    /// Do not promote; the stage fails.
    Fail,
}

impl FromStr for GateAction {
    type Err = JobError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "warn" => Ok(Self::Warn),
            "fail" => Ok(Self::Fail),
            other => Err(JobError::Invalid(format!(
                "unknown gate action `{other}`: expected `warn` or `fail`"
            ))),
        }
    }
}

impl fmt::Display for GateAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Warn => "warn",
            Self::Fail => "fail",
        })
    }
}

/// A gate: `NAME:ACTION:EXPR` on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// Name, reported with the result.
    pub name: String,
    /// What a failure does.
    pub action: GateAction,
    /// SQL boolean expression over `gate_input`.
    pub expr: String,
}

impl FromStr for Gate {
    type Err = JobError;
    fn from_str(s: &str) -> Result<Self> {
        let mut it = s.splitn(3, ':');
        match (it.next(), it.next(), it.next()) {
            (Some(name), Some(action), Some(expr))
                if !name.trim().is_empty() && !expr.trim().is_empty() =>
            {
                Ok(Self {
                    name: name.trim().to_string(),
                    action: action.trim().parse()?,
                    expr: expr.trim().to_string(),
                })
            }
            _ => Err(JobError::Invalid(format!(
                "invalid gate `{s}`: expected NAME:warn|fail:SQL-EXPRESSION, e.g. no_nans:fail:max(nan_count) = 0"
            ))),
        }
    }
}

/// The outcome of one gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// Gate name.
    pub name: String,
    /// Its action.
    pub action: GateAction,
    /// Its expression.
    pub expr: String,
    /// Whether it held.
    pub passed: bool,
    /// What was seen, e.g. `3 of 120 rows false`.
    pub detail: String,
}

impl GateResult {
    /// True when this result stops the promotion.
    pub fn blocks(&self) -> bool {
        !self.passed && self.action == GateAction::Fail
    }
}

/// Evaluate `gates` over the tensors `manifest` pins and `metrics`.
///
/// Errors only for bad input (a gate that does not parse or plan, a metric
/// named like a tensor column); a gate that evaluates to false is a result.
pub async fn evaluate(
    session: &LakeSession,
    manifest: &Manifest,
    metrics: &BTreeMap<String, f64>,
    gates: &[Gate],
) -> Result<Vec<GateResult>> {
    if gates.is_empty() {
        return Ok(Vec::new());
    }
    let mut names = std::collections::HashSet::new();
    for g in gates {
        if !names.insert(&g.name) {
            return Err(JobError::Invalid(format!(
                "gate `{}` is defined twice",
                g.name
            )));
        }
    }
    let ctx = session.context();
    let mut df = ctx
        .table(silver::TENSORS.to_string())
        .await?
        .filter(manifest.pinned_rows())?
        .drop_columns(&["pad_before"])?;
    for (k, v) in metrics {
        if df.schema().has_column_with_unqualified_name(k) {
            return Err(JobError::Invalid(format!(
                "metric `{k}` has the name of a silver.tensors column; rename it"
            )));
        }
        df = df.with_column(k, lit(*v))?;
    }
    let view_name = format!("gate_input_{}", uuid::Uuid::new_v4().simple());
    ctx.register_table(view_name.as_str(), df.clone().into_view())?;
    let mut out = Vec::new();
    let result = async {
        for g in gates {
            // Parse as one expression: anything else (a second statement, a
            // subquery smuggled in) is rejected here.
            df.parse_sql_expr(&g.expr).map_err(|e| {
                JobError::Invalid(format!(
                    "gate `{}`: `{}` is not an expression: {e}",
                    g.name, g.expr
                ))
            })?;
            let sql = format!("SELECT ({}) AS passed FROM {view_name}", g.expr);
            let batches = ctx
                .sql(&sql)
                .await
                .map_err(|e| JobError::Invalid(format!("gate `{}` ({}): {e}", g.name, g.expr)))?
                .collect()
                .await
                .map_err(|e| JobError::Invalid(format!("gate `{}` ({}): {e}", g.name, g.expr)))?;
            let (mut rows, mut falses, mut nulls) = (0usize, 0usize, 0usize);
            for b in &batches {
                let c = b.column(0);
                if c.data_type() != &DataType::Boolean {
                    return Err(JobError::Invalid(format!(
                        "gate `{}` ({}): is {}, not a boolean",
                        g.name,
                        g.expr,
                        c.data_type()
                    )));
                }
                let c = c.as_boolean();
                rows += c.len();
                nulls += c.null_count();
                falses += (0..c.len())
                    .filter(|&i| c.is_valid(i) && !c.value(i))
                    .count();
            }
            let passed = rows > 0 && falses + nulls == 0;
            let detail = match (rows, falses, nulls) {
                (0, _, _) => "no rows to check".to_string(),
                (1, 0, 0) => "true".to_string(),
                (1, 1, _) => "false".to_string(),
                (1, _, _) => "null".to_string(),
                (n, 0, 0) => format!("true on all {n} rows"),
                (n, f, 0) => format!("false on {f} of {n} rows"),
                (n, 0, z) => format!("null on {z} of {n} rows"),
                (n, f, z) => format!("false on {f} and null on {z} of {n} rows"),
            };
            out.push(GateResult {
                name: g.name.clone(),
                action: g.action,
                expr: g.expr.clone(),
                passed,
                detail,
            });
        }
        Ok::<_, JobError>(())
    }
    .await;
    let _ = ctx.deregister_table(view_name.as_str());
    result?;
    Ok(out)
}

/// Whether `expr` parses as one SQL expression (what `evaluate` will
/// require), without a session: `validate` checks gates before a run spends
/// hours reaching its promote stage. Column names are checked only then.
pub fn check_syntax(expr: &str) -> std::result::Result<(), String> {
    use deltalake::datafusion::sql::sqlparser::dialect::GenericDialect;
    use deltalake::datafusion::sql::sqlparser::parser::Parser;
    use deltalake::datafusion::sql::sqlparser::tokenizer::Token;
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(expr)
        .map_err(|e| e.to_string())?;
    parser.parse_expr().map_err(|e| e.to_string())?;
    match parser.peek_token().token {
        Token::EOF => Ok(()),
        t => Err(format!("unexpected `{t}` after the expression")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_syntax_is_checked_without_a_session() {
        assert!(check_syntax("max(nan_count) = 0").is_ok());
        assert!(check_syntax("eval_loss < 2.1 AND max(rel_l2_change) < 0.05").is_ok());
        assert!(check_syntax("max(nan_count = 0").is_err());
        assert!(check_syntax("1 = 1; DROP TABLE x").is_err());
    }

    #[test]
    fn parses_gates_with_colons_in_the_expression() {
        let g: Gate = "t:warn:CAST(x AS VARCHAR) = 'a:b'".parse().expect("valid");
        assert_eq!(g.action, GateAction::Warn);
        assert_eq!(g.expr, "CAST(x AS VARCHAR) = 'a:b'");
    }

    #[test]
    fn rejects_unknown_actions_and_missing_parts() {
        assert!("x:maybe:1 = 1".parse::<Gate>().is_err());
        assert!("x:fail".parse::<Gate>().is_err());
        assert!(":fail:1 = 1".parse::<Gate>().is_err());
    }
}
