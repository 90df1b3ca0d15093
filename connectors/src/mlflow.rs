//! A small MLflow REST client: experiments, runs and metrics (tracking), and
//! registered models, versions and aliases (registry).
//!
//! Every call is retried with jittered exponential backoff on connection errors,
//! 429 and 5xx; a 4xx answer fails at once with MLflow's `error_code`. Creating a
//! model version is not idempotent, so [`MlflowClient::ensure_model_version`]
//! tags each version with a key of ours and looks it up before (re)creating it:
//! a retried or re-run promotion never registers the same weights twice.
//!
//! Configuration: `MLFLOW_TRACKING_URI` (http or https), and
//! `MLFLOW_TRACKING_TOKEN` (bearer) or `MLFLOW_TRACKING_USERNAME`/`_PASSWORD`
//! (basic auth). Credentials never appear in errors or logs.

use std::collections::BTreeMap;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tracing::{debug, warn};
use url::Url;

use crate::{ConnectorError, Result};

/// Client of one MLflow tracking server.
#[derive(Clone)]
pub struct MlflowClient {
    base: Url,
    http: reqwest::Client,
    auth: Auth,
    retries: usize,
    min_backoff: Duration,
}

#[derive(Clone)]
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

impl std::fmt::Debug for MlflowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlflowClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// One failed call: retryable (connection, 429, 5xx) or not.
struct CallError {
    retry: bool,
    error: ConnectorError,
}

impl MlflowClient {
    /// A client of the server at `tracking_uri` (`http://host:port[/prefix]`).
    pub fn new(tracking_uri: &str) -> Result<Self> {
        let base = Url::parse(tracking_uri).map_err(|e| {
            ConnectorError::invalid("MLflow tracking URI", tracking_uri, e.to_string())
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ConnectorError::invalid(
                "MLflow tracking URI",
                tracking_uri,
                "only http(s) tracking servers are supported",
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ConnectorError::invalid("MLflow client", tracking_uri, e.to_string()))?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let auth = match (
            env("MLFLOW_TRACKING_TOKEN"),
            env("MLFLOW_TRACKING_USERNAME"),
            env("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(t), _, _) => Auth::Bearer(t),
            (None, Some(u), Some(p)) => Auth::Basic(u, p),
            _ => Auth::None,
        };
        Ok(Self {
            base,
            http,
            auth,
            retries: 5,
            min_backoff: Duration::from_millis(200),
        })
    }

    /// The client `MLFLOW_TRACKING_URI` names, if set.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var("MLFLOW_TRACKING_URI") {
            Ok(uri) if !uri.is_empty() => Self::new(&uri).map(Some),
            _ => Ok(None),
        }
    }

    /// Retries per call after the first attempt (default 5), and the first backoff.
    pub fn with_retries(mut self, retries: usize, min_backoff: Duration) -> Self {
        self.retries = retries;
        self.min_backoff = min_backoff;
        self
    }

    /// The server's address.
    pub fn uri(&self) -> &str {
        self.base.as_str()
    }

    fn endpoint(&self, path: &str) -> String {
        format!(
            "{}/api/2.0/mlflow/{path}",
            self.base.as_str().trim_end_matches('/')
        )
    }

    async fn attempt(&self, method: &Method, path: &str, body: &Value) -> Result<Value, CallError> {
        let url = self.endpoint(path);
        let mut req = self.http.request(method.clone(), &url);
        req = if *method == Method::GET {
            let query: Vec<(String, String)> = body
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string)))
                        .collect()
                })
                .unwrap_or_default();
            req.query(&query)
        } else {
            req.header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
        };
        req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
        };
        let fail = |retry: bool, reason: String| CallError {
            retry,
            error: ConnectorError::Mlflow {
                call: format!("{method} {path}"),
                server: self.base.to_string(),
                code: None,
                reason,
            },
        };
        let resp = req.send().await.map_err(|e| fail(true, e.to_string()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| fail(true, format!("reading the answer: {e}")))?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Object(Default::default()));
            }
            return serde_json::from_str(&text)
                .map_err(|e| fail(false, format!("answer is not JSON: {e}")));
        }
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = parsed["error_code"].as_str().map(str::to_string);
        let message = parsed["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(300).collect());
        let retry = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        Err(CallError {
            retry,
            error: ConnectorError::Mlflow {
                call: format!("{method} {path}"),
                server: self.base.to_string(),
                code,
                reason: format!("{status}: {message}"),
            },
        })
    }

    /// One API call, retried on connection errors, 429 and 5xx.
    async fn call(&self, method: Method, path: &str, body: Value) -> Result<Value> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.retries)
            .with_jitter();
        (|| self.attempt(&method, path, &body))
            .retry(backoff)
            .when(|e: &CallError| e.retry)
            .notify(|e: &CallError, after| {
                warn!(error = %e.error, ?after, "MLflow call failed; retrying");
            })
            .await
            .map_err(|e| e.error)
    }

    // ----- tracking -----

    /// The id of experiment `name`, created if missing.
    pub async fn experiment_id(&self, name: &str) -> Result<String> {
        match self
            .call(
                Method::GET,
                "experiments/get-by-name",
                json!({ "experiment_name": name }),
            )
            .await
        {
            Ok(v) => return string_at(&v, &["experiment", "experiment_id"], self),
            Err(e) if error_code(&e) != Some("RESOURCE_DOES_NOT_EXIST") => return Err(e),
            Err(_) => {}
        }
        match self
            .call(Method::POST, "experiments/create", json!({ "name": name }))
            .await
        {
            Ok(v) => string_at(&v, &["experiment_id"], self),
            // Created by someone else meanwhile.
            Err(e) if error_code(&e) == Some("RESOURCE_ALREADY_EXISTS") => {
                let v = self
                    .call(
                        Method::GET,
                        "experiments/get-by-name",
                        json!({ "experiment_name": name }),
                    )
                    .await?;
                string_at(&v, &["experiment", "experiment_id"], self)
            }
            Err(e) => Err(e),
        }
    }

    /// Start a run; returns its id.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        tags: &[(String, String)],
    ) -> Result<String> {
        let v = self
            .call(
                Method::POST,
                "runs/create",
                json!({
                    "experiment_id": experiment_id,
                    "run_name": run_name,
                    "start_time": now_ms(),
                    "tags": key_values(tags),
                }),
            )
            .await?;
        string_at(&v, &["run", "info", "run_id"], self)
    }

    /// Log params and metrics (metrics at step 0, now).
    pub async fn log_batch(
        &self,
        run_id: &str,
        params: &[(String, String)],
        metrics: &[(String, f64)],
    ) -> Result<()> {
        let ts = now_ms();
        let metrics: Vec<Value> = metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| json!({ "key": k, "value": v, "timestamp": ts, "step": 0 }))
            .collect();
        // MLflow caps params at 100 and metrics at 1000 per batch.
        for chunk in params.chunks(100) {
            self.call(
                Method::POST,
                "runs/log-batch",
                json!({ "run_id": run_id, "params": key_values(chunk) }),
            )
            .await?;
        }
        for chunk in metrics.chunks(1000) {
            self.call(
                Method::POST,
                "runs/log-batch",
                json!({ "run_id": run_id, "metrics": chunk }),
            )
            .await?;
        }
        Ok(())
    }

    /// End a run as `FINISHED` or `FAILED`.
    pub async fn finish_run(&self, run_id: &str, ok: bool) -> Result<()> {
        self.call(
            Method::POST,
            "runs/update",
            json!({
                "run_id": run_id,
                "status": if ok { "FINISHED" } else { "FAILED" },
                "end_time": now_ms(),
            }),
        )
        .await
        .map(|_| ())
    }

    /// The latest value of every metric of a run.
    pub async fn run_metrics(&self, run_id: &str) -> Result<BTreeMap<String, f64>> {
        let v = self
            .call(Method::GET, "runs/get", json!({ "run_id": run_id }))
            .await?;
        let mut out = BTreeMap::new();
        for m in v["run"]["data"]["metrics"].as_array().into_iter().flatten() {
            if let (Some(k), Some(x)) = (m["key"].as_str(), m["value"].as_f64()) {
                out.insert(k.to_string(), x);
            }
        }
        Ok(out)
    }

    // ----- registry -----

    /// Create registered model `name` unless it exists.
    pub async fn ensure_registered_model(&self, name: &str) -> Result<()> {
        match self
            .call(
                Method::POST,
                "registered-models/create",
                json!({ "name": name }),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("RESOURCE_ALREADY_EXISTS") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The registry version of `name` tagged `key = value`, if any.
    pub async fn find_version_by_tag(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<Option<String>> {
        let mut token: Option<String> = None;
        for _ in 0..100 {
            let mut q = json!({
                "filter": format!("name = '{}'", name.replace('\'', "\\'")),
                "max_results": "200",
            });
            if let Some(t) = &token {
                q["page_token"] = json!(t);
            }
            let v = self.call(Method::GET, "model-versions/search", q).await?;
            for mv in v["model_versions"].as_array().into_iter().flatten() {
                let tagged =
                    mv["tags"].as_array().into_iter().flatten().any(|t| {
                        t["key"].as_str() == Some(key) && t["value"].as_str() == Some(value)
                    });
                if tagged && let Some(ver) = mv["version"].as_str() {
                    return Ok(Some(ver.to_string()));
                }
            }
            token = v["next_page_token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(None)
    }

    /// The version of `name` tagged `key = value`, created from `source` if
    /// there is none yet. Safe to retry and to re-run.
    pub async fn ensure_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: Option<&str>,
        key: &str,
        value: &str,
        tags: &[(String, String)],
    ) -> Result<String> {
        if let Some(v) = self.find_version_by_tag(name, key, value).await? {
            debug!(name, version = %v, "model version already registered");
            return Ok(v);
        }
        let mut all_tags = tags.to_vec();
        all_tags.push((key.to_string(), value.to_string()));
        let mut body = json!({
            "name": name,
            "source": source,
            "tags": key_values(&all_tags),
        });
        if let Some(r) = run_id {
            body["run_id"] = json!(r);
        }
        // Not retried blindly: a lost answer may hide a version that was created.
        let mut last = None;
        for attempt in 0..=self.retries {
            match self
                .attempt(&Method::POST, "model-versions/create", &body)
                .await
            {
                Ok(v) => return string_at(&v, &["model_version", "version"], self),
                Err(e) if e.retry => {
                    warn!(error = %e.error, attempt, "creating the model version failed; checking");
                    tokio::time::sleep(self.min_backoff * 2u32.pow(attempt.min(6) as u32)).await;
                    if let Some(v) = self.find_version_by_tag(name, key, value).await? {
                        return Ok(v);
                    }
                    last = Some(e.error);
                }
                Err(e) => return Err(e.error),
            }
        }
        Err(last.unwrap_or_else(|| ConnectorError::Mlflow {
            call: "POST model-versions/create".into(),
            server: self.base.to_string(),
            code: None,
            reason: "gave up".into(),
        }))
    }

    /// Point `alias` of `name` at `version`.
    pub async fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<()> {
        self.call(
            Method::POST,
            "registered-models/alias",
            json!({ "name": name, "alias": alias, "version": version }),
        )
        .await
        .map(|_| ())
    }

    /// Remove `alias` of `name` (no error if it is not set).
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        match self
            .call(
                Method::DELETE,
                "registered-models/alias",
                json!({ "name": name, "alias": alias }),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("RESOURCE_DOES_NOT_EXIST") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every alias of registered model `name`: (alias, version).
    pub async fn aliases(&self, name: &str) -> Result<Vec<(String, String)>> {
        let v = match self
            .call(
                Method::GET,
                "registered-models/get",
                json!({ "name": name }),
            )
            .await
        {
            Ok(v) => v,
            Err(e) if error_code(&e) == Some("RESOURCE_DOES_NOT_EXIST") => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(v["registered_model"]["aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((
                    a["alias"].as_str()?.to_string(),
                    a["version"].as_str()?.to_string(),
                ))
            })
            .collect())
    }

    /// The version `alias` of `name` points at, if set.
    pub async fn get_alias(&self, name: &str, alias: &str) -> Result<Option<String>> {
        match self
            .call(
                Method::GET,
                "registered-models/alias",
                json!({ "name": name, "alias": alias }),
            )
            .await
        {
            Ok(v) => Ok(v["model_version"]["version"].as_str().map(str::to_string)),
            Err(e)
                if matches!(
                    error_code(&e),
                    Some("RESOURCE_DOES_NOT_EXIST") | Some("INVALID_PARAMETER_VALUE")
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

fn error_code(e: &ConnectorError) -> Option<&str> {
    match e {
        ConnectorError::Mlflow { code, .. } => code.as_deref(),
        _ => None,
    }
}

fn string_at(v: &Value, path: &[&str], c: &MlflowClient) -> Result<String> {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str()
        .map(str::to_string)
        .ok_or_else(|| ConnectorError::Mlflow {
            call: path.join("."),
            server: c.base.to_string(),
            code: None,
            reason: format!("answer has no {}", path.join(".")),
        })
}

fn key_values(kv: &[(String, String)]) -> Vec<Value> {
    kv.iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
