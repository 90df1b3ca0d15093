//! Run notifications: tell people when a run starts, succeeds or fails.
//!
//! ```yaml
//! notifications:
//!   on: [failure, success]          # start | success | failure; default [failure]
//!   webhook: https://hooks.example/runs   # `weightlake run` POSTs each event as JSON
//!   emails: [ml-platform@example.com]     # Databricks export: email_notifications
//!   databricks_destinations: [<id>]       # Databricks export: webhook_notifications
//! ```
//!
//! The local runner has no mail server: it POSTs `{event, pipeline, run_id,
//! at, succeeded, stages: {name: outcome}, errors: {name: message},
//! cost_usd}` to `webhook` (`event` is `run_started`, `run_succeeded` or
//! `run_failed`). The Databricks export turns `emails` and
//! `databricks_destinations` (notification destination ids) into the job's
//! `email_notifications` and `webhook_notifications` for the same events.
//! Delivery is retried and never fails a run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};
use weightlake_connectors::webhook::Webhook;

use crate::runner::{Outcome, RunReport};

/// A run event people can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEvent {
    /// The run started.
    Start,
    /// The run ended and no stage failed.
    Success,
    /// The run ended with a failed or cancelled stage, or was refused.
    Failure,
}

/// `notifications:` (top level).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsSpec {
    /// Events to notify. Default `[failure]`.
    #[serde(default = "default_events")]
    pub on: Vec<RunEvent>,
    /// POST each event as JSON here (the local runner).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Addresses for the Databricks job's `email_notifications`.
    #[serde(default)]
    pub emails: Vec<String>,
    /// Databricks notification destination ids for the job's
    /// `webhook_notifications`.
    #[serde(default)]
    pub databricks_destinations: Vec<String>,
}

fn default_events() -> Vec<RunEvent> {
    vec![RunEvent::Failure]
}

impl NotificationsSpec {
    /// True when `event` is notified.
    pub fn wants(&self, event: RunEvent) -> bool {
        self.on.contains(&event)
    }
}

/// Problems with `notifications:`: (key, message).
pub(crate) fn check(n: &NotificationsSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if n.on.is_empty() {
        out.push((
            "on",
            "notifications.on needs at least one of start, success, failure".into(),
        ));
    }
    if n.webhook.is_none() && n.emails.is_empty() && n.databricks_destinations.is_empty() {
        out.push((
            "notifications",
            "notifications: name a webhook, emails or databricks_destinations".into(),
        ));
    }
    if let Some(Err(e)) = n.webhook.as_deref().map(Webhook::new) {
        out.push(("webhook", e.to_string()));
    }
    for e in &n.emails {
        let ok = e
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
            && !e.chars().any(char::is_whitespace);
        if !ok {
            out.push(("emails", format!("`{e}` is not an email address")));
        }
    }
    out
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// POST `body` to the webhook of `spec` when it wants `event`.
async fn post(spec: Option<&NotificationsSpec>, event: RunEvent, body: serde_json::Value) {
    let Some(url) = spec
        .filter(|s| s.wants(event))
        .and_then(|s| s.webhook.as_deref())
    else {
        return;
    };
    let result = match Webhook::new(url) {
        Ok(hook) => hook.post(&body).await.map(|()| hook.redacted()),
        Err(e) => Err(e),
    };
    match result {
        Ok(to) => info!(webhook = %to, event = ?event, "run notification sent"),
        Err(e) => warn!(error = %e, "run notification not delivered"),
    }
}

/// Tell `spec`'s webhook that run `run_id` of `pipeline` started.
pub async fn started(spec: Option<&NotificationsSpec>, pipeline: &str, run_id: &str) {
    let body = json!({
        "event": "run_started",
        "pipeline": pipeline,
        "run_id": run_id,
        "at": now(),
    });
    post(spec, RunEvent::Start, body).await;
}

/// Tell `spec`'s webhook how run `run_id` of `pipeline` ended.
pub async fn ended(
    spec: Option<&NotificationsSpec>,
    pipeline: &str,
    run_id: &str,
    report: &RunReport,
) {
    let ok = report.succeeded();
    let stages: BTreeMap<&str, &str> = report
        .stages
        .iter()
        .filter(|s| s.outcome != Outcome::Excluded)
        .map(|s| (s.stage.as_str(), s.outcome.as_str()))
        .collect();
    let errors: BTreeMap<&str, String> = report
        .errors()
        .map(|(stage, e)| (stage, e.to_string()))
        .collect();
    let body = json!({
        "event": if ok { "run_succeeded" } else { "run_failed" },
        "pipeline": pipeline,
        "run_id": run_id,
        "at": now(),
        "succeeded": ok,
        "stages": stages,
        "errors": errors,
        "cost_usd": report.cost_usd,
    });
    let event = if ok {
        RunEvent::Success
    } else {
        RunEvent::Failure
    };
    post(spec, event, body).await;
}

/// Tell `spec`'s webhook that run `run_id` was refused before it started.
pub async fn refused(spec: Option<&NotificationsSpec>, pipeline: &str, run_id: &str, why: &str) {
    let body = json!({
        "event": "run_failed",
        "pipeline": pipeline,
        "run_id": run_id,
        "at": now(),
        "succeeded": false,
        "stages": {},
        "errors": { "run": why },
        "cost_usd": null,
    });
    post(spec, RunEvent::Failure, body).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_default_to_failure_and_bad_settings_are_named() {
        let n: NotificationsSpec = yaml_serde::from_str("emails: [a@b.io]").expect("parse");
        assert_eq!(n.on, [RunEvent::Failure]);
        assert!(check(&n).is_empty());
        let bad = NotificationsSpec {
            on: vec![],
            webhook: Some("nope".into()),
            emails: vec!["not-an-address".into()],
            databricks_destinations: vec![],
        };
        let keys: Vec<&str> = check(&bad).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["on", "webhook", "emails"]);
        let empty = NotificationsSpec {
            on: vec![RunEvent::Start],
            webhook: None,
            emails: vec![],
            databricks_destinations: vec![],
        };
        assert_eq!(check(&empty)[0].0, "notifications");
    }
}
