//! `compute:` hints -> the job's one shared cluster.

use std::collections::BTreeMap;

use super::model::{AwsAttributes, AzureAttributes, GcpAttributes, JobCluster, NewCluster};
use crate::spec::{Cloud, ComputeSpec};

/// The `job_cluster_key` every task uses.
pub const CLUSTER_KEY: &str = "weightlake";
/// The runtime when `compute.spark_version` is not given (an LTS release).
pub const DEFAULT_SPARK_VERSION: &str = "15.4.x-scala2.12";

/// Default node type per cloud.
pub fn default_node_type(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Aws => "i3.xlarge",
        Cloud::Gcp => "n2-highmem-4",
        Cloud::Azure => "Standard_DS3_v2",
    }
}

/// The shared job cluster; without `compute:`, one AWS on-demand worker.
/// `weightlake_bin` is where the launchers find the binary (`WEIGHTLAKE_BIN`).
pub fn job_cluster(compute: Option<&ComputeSpec>, weightlake_bin: &str) -> JobCluster {
    let fallback = ComputeSpec {
        cloud: Cloud::Aws,
        node_type: None,
        workers: None,
        spot: false,
        spark_version: None,
    };
    let c = compute.unwrap_or(&fallback);
    let mut cluster = NewCluster {
        spark_version: c
            .spark_version
            .clone()
            .unwrap_or_else(|| DEFAULT_SPARK_VERSION.into()),
        node_type_id: c
            .node_type
            .clone()
            .unwrap_or_else(|| default_node_type(c.cloud).into()),
        num_workers: c.workers.unwrap_or(1),
        aws_attributes: None,
        gcp_attributes: None,
        azure_attributes: None,
        spark_env_vars: BTreeMap::from([("WEIGHTLAKE_BIN".to_string(), weightlake_bin.into())]),
    };
    if c.spot {
        match c.cloud {
            Cloud::Aws => {
                cluster.aws_attributes = Some(AwsAttributes {
                    availability: "SPOT_WITH_FALLBACK".into(),
                    first_on_demand: 1,
                })
            }
            Cloud::Gcp => {
                cluster.gcp_attributes = Some(GcpAttributes {
                    availability: "PREEMPTIBLE_WITH_FALLBACK_GCP".into(),
                })
            }
            Cloud::Azure => {
                cluster.azure_attributes = Some(AzureAttributes {
                    availability: "SPOT_WITH_FALLBACK_AZURE".into(),
                    first_on_demand: 1,
                })
            }
        }
    }
    JobCluster {
        job_cluster_key: CLUSTER_KEY.into(),
        new_cluster: cluster,
    }
}
