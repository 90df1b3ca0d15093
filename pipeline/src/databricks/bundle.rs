//! The Databricks Asset Bundle: `databricks.yml` with `bundle.name`,
//! `variables` (`weightlake_artifacts`, the artifacts directory, and one per pipeline
//! parameter),
//! `resources.jobs.<key>` (the same job as `job-json`, reading the variables)
//! and targets `dev` (development mode, the default) and `prod` (production).

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::JobSettings;
use super::{ARTIFACTS_VARIABLE, ExportError, ExportOptions, job_settings};
use crate::ValidatedPipeline;

/// `databricks.yml`.
#[derive(Debug, Serialize)]
pub struct Bundle {
    /// `bundle:`.
    pub bundle: BundleInfo,
    /// `variables:`.
    pub variables: BTreeMap<String, Variable>,
    /// `resources:`.
    pub resources: Resources,
    /// `targets:`.
    pub targets: BTreeMap<String, Target>,
}

/// `bundle:`.
#[derive(Debug, Serialize)]
pub struct BundleInfo {
    /// The bundle's name.
    pub name: String,
}

/// A bundle variable.
#[derive(Debug, Serialize)]
pub struct Variable {
    /// What it is.
    pub description: String,
    /// Its default.
    pub default: String,
}

/// `resources:`.
#[derive(Debug, Serialize)]
pub struct Resources {
    /// `jobs:` by resource key.
    pub jobs: BTreeMap<String, JobSettings>,
}

/// A deployment target.
#[derive(Debug, Serialize)]
pub struct Target {
    /// `development` or `production`.
    pub mode: String,
    /// The target used when none is named.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
}

/// The bundle for `p`.
pub fn bundle(p: &ValidatedPipeline, opts: &ExportOptions) -> Bundle {
    let spec = p.spec();
    let mut job = job_settings(
        p,
        opts.runner,
        &format!("${{var.{ARTIFACTS_VARIABLE}}}"),
        opts.pipeline_path.as_deref(),
    );
    for param in &mut job.parameters {
        param.default = format!("${{var.{}}}", param.name);
    }
    let mut variables = BTreeMap::from([(
        ARTIFACTS_VARIABLE.to_string(),
        Variable {
            description:
                "Directory holding the weightlake binary, the launcher and the pipeline file".into(),
            default: opts.artifacts.clone(),
        },
    )]);
    for (name, default) in &spec.parameters {
        variables.insert(
            name.clone(),
            Variable {
                description: format!("pipeline parameter `{name}`"),
                default: default.clone(),
            },
        );
    }
    Bundle {
        bundle: BundleInfo {
            name: spec.name.clone(),
        },
        variables,
        resources: Resources {
            jobs: BTreeMap::from([(spec.name.replace('-', "_"), job)]),
        },
        targets: BTreeMap::from([
            (
                "dev".to_string(),
                Target {
                    mode: "development".into(),
                    default: true,
                },
            ),
            (
                "prod".to_string(),
                Target {
                    mode: "production".into(),
                    default: false,
                },
            ),
        ]),
    }
}

/// The bundle as YAML.
pub fn bundle_yaml(p: &ValidatedPipeline, opts: &ExportOptions) -> Result<String, ExportError> {
    let header = format!(
        "# Databricks Asset Bundle for weightlake pipeline `{}`: `databricks bundle deploy`\n",
        p.spec().name
    );
    Ok(header + &yaml_serde::to_string(&bundle(p, opts))?)
}
