//! Cost estimates: a price table (instance $/hour, storage $/GB-month, egress
//! $/GB) and the pipeline's `cost:` block turn what a task did into dollars.
//!
//! The model, per task attempt:
//!
//! - compute: the attempt's wall time × the instance's $/hour × `nodes`. Each
//!   task is charged as if it held the instance alone, so tasks that run at
//!   the same time on one machine are counted once each: an upper bound, which
//!   is what a budget wants.
//! - storage: bytes the attempt added to the lake (bronze chunks downloaded,
//!   silver blob bytes stored) × $/GB-month × `storage_months` (default 1: a
//!   month of keeping what the run wrote).
//! - egress: bytes an export stage wrote × $/GB (exports feed trainers that
//!   usually sit elsewhere; set `egress_gb: 0` when they stay in-region).
//!   Ingest is ingress, which clouds do not charge.
//!
//! ```yaml
//! cost:
//!   instance: c4a-standard-8      # a row of the price table
//!   nodes: 1                      # default 1
//!   price_table: gcp              # built-in `gcp` (default) or `aws`, or a YAML file
//!   prices: { egress_gb: 0 }      # inline entries, over the table's
//!   storage_months: 1             # default 1
//!   assumed_throughput_mbps: 100  # for estimates without history; default 100
//! ```

pub mod budget;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::runner::StageReport;
use crate::spec::PipelineSpec;
use crate::validate::{locate_path, suggest};
use crate::{PipelineError, SpecError};

/// The built-in price tables, by name.
const BUILTIN: &[(&str, &str)] = &[
    ("gcp", include_str!("gcp.yaml")),
    ("aws", include_str!("aws.yaml")),
];

/// A price table, as written in YAML (a file, a built-in, or inline `prices:`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// Instance type -> $ per node-hour.
    #[serde(default)]
    pub instances: BTreeMap<String, f64>,
    /// Object storage, $ per GB-month.
    #[serde(default)]
    pub storage_gb_month: Option<f64>,
    /// Egress, $ per GB.
    #[serde(default)]
    pub egress_gb: Option<f64>,
}

impl PriceTable {
    /// The entries of `over` replace those of `self`.
    fn overlay(mut self, over: &PriceTable) -> Self {
        self.instances
            .extend(over.instances.iter().map(|(k, v)| (k.clone(), *v)));
        self.storage_gb_month = over.storage_gb_month.or(self.storage_gb_month);
        self.egress_gb = over.egress_gb.or(self.egress_gb);
        self
    }

    /// Every price that is negative or not a number.
    fn bad_prices(&self) -> Vec<String> {
        let mut all: Vec<(String, f64)> = self
            .instances
            .iter()
            .map(|(k, v)| (format!("instances.{k}"), *v))
            .collect();
        all.extend(
            self.storage_gb_month
                .map(|v| ("storage_gb_month".into(), v)),
        );
        all.extend(self.egress_gb.map(|v| ("egress_gb".into(), v)));
        all.into_iter()
            .filter(|(_, v)| !v.is_finite() || *v < 0.0)
            .map(|(k, v)| format!("{k} = {v}"))
            .collect()
    }
}

/// `cost:` (top level): which instance the tasks run on and its prices.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostSpec {
    /// Instance type, a key of the price table's `instances`.
    pub instance: String,
    /// Nodes a task holds (a cluster's driver + workers). Default 1.
    #[serde(default)]
    pub nodes: Option<u32>,
    /// `gcp` or `aws` (built-in tables), or the path of a YAML price table
    /// (relative to the current directory). Default `gcp`.
    #[serde(default)]
    pub price_table: Option<String>,
    /// Prices that replace the table's.
    #[serde(default)]
    pub prices: Option<PriceTable>,
    /// Months of storage charged for bytes a run adds. Default 1.
    #[serde(default)]
    pub storage_months: Option<f64>,
    /// Throughput (MB/s) assumed by estimates for a stage with no history.
    /// Default 100.
    #[serde(default)]
    pub assumed_throughput_mbps: Option<f64>,
}

/// The prices in effect for one pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct CostModel {
    /// The instance type.
    pub instance: String,
    /// $ per hour of one task (instance price × nodes).
    pub usd_per_hour: f64,
    /// $ per GB-month of lake storage.
    pub storage_usd_per_gb_month: f64,
    /// $ per GB of egress.
    pub egress_usd_per_gb: f64,
    /// Months of storage charged for added bytes.
    pub storage_months: f64,
    /// MB/s assumed for a stage with no history.
    pub assumed_throughput_mbps: f64,
}

/// What one task attempt used.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Wall time.
    pub elapsed: Duration,
    /// Bytes added to the lake.
    pub stored_bytes: u64,
    /// Bytes sent out of the cloud.
    pub egress_bytes: u64,
}

impl CostModel {
    /// Dollars of compute for `elapsed` of one task.
    pub fn compute_usd(&self, elapsed: Duration) -> f64 {
        elapsed.as_secs_f64() / 3600.0 * self.usd_per_hour
    }

    /// Dollars of one attempt: compute + storage + egress.
    pub fn usd(&self, u: &Usage) -> f64 {
        self.compute_usd(u.elapsed)
            + u.stored_bytes as f64 / 1e9 * self.storage_usd_per_gb_month * self.storage_months
            + u.egress_bytes as f64 / 1e9 * self.egress_usd_per_gb
    }

    /// Dollars of an attempt that ran `elapsed` and ended with `report`
    /// (None for a failed attempt: compute only).
    pub fn attempt_usd(&self, report: Option<&StageReport>, elapsed: Duration) -> f64 {
        let (stored_bytes, egress_bytes) = match report {
            Some(StageReport::Ingest(r)) => (r.bytes_downloaded, 0),
            Some(StageReport::Tensorise(r)) => (r.bytes_stored, 0),
            Some(StageReport::Export(r)) => (0, r.bytes),
            _ => (0, 0),
        };
        self.usd(&Usage {
            elapsed,
            stored_bytes,
            egress_bytes,
        })
    }
}

/// The cost model of `spec` (None without a `cost:` block), with the checks of
/// `cost:`, `budget:`, `alerts:` and `notifications:`. Reads `price_table` when it
/// names a file.
pub(crate) fn resolve(
    spec: &PipelineSpec,
    raw: &str,
    origin: &str,
) -> Result<Option<CostModel>, PipelineError> {
    let mut errs = Vec::new();
    let err = |path: &[&str], message: String| {
        let (line, column) = locate_path(raw, path);
        SpecError {
            file: origin.to_string(),
            line,
            column,
            message,
        }
    };
    let positive = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0);
    if let Some(b) = &spec.budget {
        if b.max_usd_per_run.is_none() && b.max_usd_per_day.is_none() {
            errs.push(err(
                &["budget"],
                "`budget:` needs max_usd_per_run or max_usd_per_day".into(),
            ));
        }
        for (key, v) in [
            ("max_usd_per_run", b.max_usd_per_run),
            ("max_usd_per_day", b.max_usd_per_day),
        ] {
            if !positive(v) {
                errs.push(err(
                    &["budget", key],
                    format!("budget.{key} must be a positive number of dollars"),
                ));
            }
        }
    }
    if let Some(n) = &spec.notifications {
        errs.extend(crate::notifications::check(n).into_iter().map(|(key, m)| {
            if key == "notifications" {
                err(&["notifications"], m)
            } else {
                err(&["notifications", key], m)
            }
        }));
    }
    if let Some(a) = &spec.alerts {
        errs.extend(
            crate::alerts::check(a)
                .into_iter()
                .map(|(key, m)| err(&["alerts", key], m)),
        );
    }
    let needs_cost = spec.budget.is_some()
        || spec
            .alerts
            .as_ref()
            .is_some_and(|a| a.max_usd_per_run.is_some());
    let model = match &spec.cost {
        None => {
            if needs_cost {
                let at = if spec.budget.is_some() {
                    "budget"
                } else {
                    "alerts"
                };
                errs.push(err(
                    &[at],
                    "dollar limits need a `cost:` block (instance and price table) to estimate costs"
                        .into(),
                ));
            }
            None
        }
        Some(c) => match model_of(c) {
            Ok(m) => Some(m),
            Err((key, message)) => {
                errs.push(err(&["cost", key], message));
                None
            }
        },
    };
    if errs.is_empty() {
        Ok(model)
    } else {
        Err(PipelineError::Spec(errs))
    }
}

/// The model of one `cost:` block, or the key at fault and why.
fn model_of(c: &CostSpec) -> Result<CostModel, (&'static str, String)> {
    let name = c.price_table.as_deref().unwrap_or("gcp");
    let table = match BUILTIN.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => yaml_serde::from_str::<PriceTable>(text)
            .map_err(|e| ("price_table", format!("built-in price table `{name}`: {e}")))?,
        None => {
            let text = std::fs::read_to_string(name).map_err(|e| {
                (
                    "price_table",
                    format!(
                        "price table `{name}`: {e} (built-in tables: {})",
                        BUILTIN
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            yaml_serde::from_str::<PriceTable>(&text)
                .map_err(|e| ("price_table", format!("price table `{name}`: {e}")))?
        }
    };
    let table = match &c.prices {
        Some(p) => table.overlay(p),
        None => table,
    };
    let bad = table.bad_prices();
    if !bad.is_empty() {
        return Err((
            "prices",
            format!("prices must be non-negative numbers: {}", bad.join(", ")),
        ));
    }
    let Some(per_node) = table.instances.get(&c.instance) else {
        return Err((
            "instance",
            format!(
                "instance `{}` is not in price table `{name}`{}; add it under `prices: {{ instances: {{ {}: <$/hour> }} }}`",
                c.instance,
                suggest(&c.instance, table.instances.keys()),
                c.instance
            ),
        ));
    };
    let nodes = c.nodes.unwrap_or(1);
    if nodes == 0 {
        return Err(("nodes", "cost.nodes must be at least 1".into()));
    }
    let months = c.storage_months.unwrap_or(1.0);
    if !months.is_finite() || months < 0.0 {
        return Err((
            "storage_months",
            "cost.storage_months must be a non-negative number".into(),
        ));
    }
    let throughput = c.assumed_throughput_mbps.unwrap_or(100.0);
    if !throughput.is_finite() || throughput <= 0.0 {
        return Err((
            "assumed_throughput_mbps",
            "cost.assumed_throughput_mbps must be a positive number".into(),
        ));
    }
    Ok(CostModel {
        instance: c.instance.clone(),
        usd_per_hour: per_node * f64::from(nodes),
        storage_usd_per_gb_month: table.storage_gb_month.unwrap_or(0.0),
        egress_usd_per_gb: table.egress_gb.unwrap_or(0.0),
        storage_months: months,
        assumed_throughput_mbps: throughput,
    })
}

/// Dollars as printed: cents from a dollar up, else three significant
/// digits (`$0.500`, `$0.0123`, `$0.00000490`).
pub fn usd(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("${v}");
    }
    if v.abs() >= 1.0 {
        return format!("${v:.2}");
    }
    let decimals = (2 - v.abs().log10().floor() as i32).clamp(2, 12) as usize;
    format!("${v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str;

    const HEAD: &str = "name: t\nlake: ./l\nsources: { s: { local: { path: ./m } } }\nstages:\n  a: { job: ingest, sources: [s] }\n";

    #[test]
    fn builtin_tables_parse_and_price_an_attempt() {
        for (name, _) in BUILTIN {
            let inst = if *name == "gcp" {
                "c4a-standard-4"
            } else {
                "m7g.xlarge"
            };
            let p = load_str(
                &format!("{HEAD}cost: {{ instance: {inst}, price_table: {name}, nodes: 2 }}\n"),
                "t.yaml",
            )
            .expect("valid");
            let m = p.cost().expect("a cost model");
            assert!(m.usd_per_hour > 0.0 && m.storage_usd_per_gb_month > 0.0);
            // Two nodes for an hour, 10 GB stored for a month, 0 egress.
            let u = Usage {
                elapsed: Duration::from_secs(3600),
                stored_bytes: 10_000_000_000,
                egress_bytes: 0,
            };
            let want = m.usd_per_hour + 10.0 * m.storage_usd_per_gb_month;
            assert!((m.usd(&u) - want).abs() < 1e-9);
        }
    }

    #[test]
    fn dollars_keep_three_significant_digits_below_a_dollar() {
        assert_eq!(usd(12.345), "$12.35");
        assert_eq!(usd(0.5), "$0.500");
        assert_eq!(usd(0.0123), "$0.0123");
        assert_eq!(usd(0.0000049), "$0.00000490");
        assert_eq!(usd(0.0), "$0");
    }

    #[test]
    fn inline_prices_override_the_table() {
        let p = load_str(
            &format!(
                "{HEAD}cost:\n  instance: mybox\n  prices: {{ instances: {{ mybox: 2.5 }}, egress_gb: 0 }}\n"
            ),
            "t.yaml",
        )
        .expect("valid");
        let m = p.cost().expect("model");
        assert_eq!(m.usd_per_hour, 2.5);
        assert_eq!(m.egress_usd_per_gb, 0.0);
        assert_eq!(m.storage_usd_per_gb_month, 0.020, "gcp default kept");
    }

    #[test]
    fn unknown_instances_bad_prices_and_limits_without_cost_are_located() {
        let e = load_str(
            &format!("{HEAD}cost:\n  instance: c4a-standard-9\n"),
            "t.yaml",
        )
        .expect_err("invalid")
        .to_string();
        assert!(
            e.contains("t.yaml:7:3:") && e.contains("did you mean `c4a-standard-"),
            "{e}"
        );
        let e = load_str(
            &format!("{HEAD}cost:\n  instance: x\n  prices: {{ instances: {{ x: -1 }} }}\n"),
            "t.yaml",
        )
        .expect_err("invalid")
        .to_string();
        assert!(e.contains("instances.x = -1"), "{e}");
        let e = load_str(
            &format!("{HEAD}budget: {{ max_usd_per_run: 5 }}\n"),
            "t.yaml",
        )
        .expect_err("invalid")
        .to_string();
        assert!(
            e.contains("t.yaml:6:1:") && e.contains("need a `cost:` block"),
            "{e}"
        );
        let e = load_str(
            &format!(
                "{HEAD}cost: {{ instance: c4a-standard-4 }}\nbudget: {{ max_usd_per_day: 0 }}\n"
            ),
            "t.yaml",
        )
        .expect_err("invalid")
        .to_string();
        assert!(e.contains("max_usd_per_day must be a positive"), "{e}");
        let e = load_str(
            &format!("{HEAD}cost: {{ instance: x, price_table: /no/such.yaml }}\n"),
            "t.yaml",
        )
        .expect_err("invalid")
        .to_string();
        assert!(
            e.contains("/no/such.yaml") && e.contains("built-in tables: gcp, aws"),
            "{e}"
        );
    }
}
