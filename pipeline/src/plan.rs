//! `weightlake plan`: the DAG as the runner will walk it, offline. Each stage
//! with its wave (stages of one wave may run at the same time), job,
//! dependencies, `run_if`, shards, retries and timeout.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::ValidatedPipeline;
use crate::spec::{JobKind, RunIf};

/// Wave of each stage: 1 for stages without dependencies, else one more than
/// the latest of its dependencies.
pub fn waves(p: &ValidatedPipeline) -> BTreeMap<String, usize> {
    let mut wave = BTreeMap::new();
    for name in p.order() {
        let w = p.spec().stages[name]
            .depends_on
            .iter()
            .filter_map(|d| wave.get(d))
            .max()
            .map_or(1, |w| w + 1);
        wave.insert(name.clone(), w);
    }
    wave
}

/// The plan as text, one stage per line, in run order.
pub fn render(p: &ValidatedPipeline) -> String {
    let spec = p.spec();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline {} ({}): lake {}, {} stages",
        spec.name,
        p.origin(),
        spec.lake,
        spec.stages.len()
    );
    if !p.params().is_empty() {
        let params: Vec<String> = p.params().iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "parameters: {}", params.join(", "));
    }
    if let Some(s) = &spec.schedule {
        let _ = writeln!(
            out,
            "schedule (Databricks): {} {}{}",
            s.quartz_cron,
            s.timezone,
            if s.paused { " (paused)" } else { "" }
        );
    }
    let waves = waves(p);
    for name in p.order() {
        let st = &spec.stages[name];
        let deps = if st.depends_on.is_empty() {
            "-".to_string()
        } else {
            st.depends_on.join(",")
        };
        let run_if = if st.depends_on.is_empty() {
            "-"
        } else {
            st.run_if.unwrap_or(RunIf::AllSuccess).as_str()
        };
        let retries = match (st.max_retries.unwrap_or(0), st.min_retry_interval) {
            (0, _) => "0".to_string(),
            (n, Some(i)) => format!("{n} every {}", human(i)),
            (n, None) => n.to_string(),
        };
        let timeout = match st.timeout {
            None => "-".to_string(),
            Some(t) if st.retry_on_timeout == Some(true) => format!("{} (retried)", human(t)),
            Some(t) => human(t),
        };
        let _ = writeln!(
            out,
            "  wave {}  {name}  job={}  depends_on={deps}  run_if={run_if}  shards={}  retries={retries}  timeout={timeout}{}",
            waves[name],
            st.job.as_str(),
            st.shards.unwrap_or(1),
            detail(p, st),
        );
    }
    out
}

/// What a promote, export or maintain stage acts on, e.g.
/// `  model=ft@main -> tuned@champion, 2 gates`.
fn detail(p: &ValidatedPipeline, st: &crate::spec::StageSpec) -> String {
    let model = st.model.clone().unwrap_or_default();
    match st.job {
        JobKind::Promote => {
            let model = crate::validate::resolve_model(p.spec(), &model, "model").unwrap_or(model);
            format!(
                "  model={model} -> {}{}, {} gate{}",
                st.name.as_deref().unwrap_or_default(),
                st.alias
                    .as_ref()
                    .map(|a| format!("@{a}"))
                    .unwrap_or_default(),
                st.gates.len(),
                if st.gates.len() == 1 { "" } else { "s" }
            )
        }
        JobKind::Export => format!(
            "  model={model} -> {}",
            st.to.as_deref().unwrap_or_default()
        ),
        JobKind::Maintain => crate::maintain_stage::detail(st),
        JobKind::Ingest | JobKind::Tensorise => String::new(),
    }
}

fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    #[test]
    fn plan_lists_waves_and_settings() {
        let p = load_str(
            "name: t\nlake: ./l\nsources: { s: { local: { path: ./m } } }\nstages:\n  a: { job: ingest, sources: [s], shards: 4, max_retries: 2, min_retry_interval: 90s }\n  b: { job: ingest, sources: [s] }\n  c: { job: tensorise, depends_on: [a, b], run_if: ALL_DONE, timeout: 2h, retry_on_timeout: true }\n",
            "t.yaml",
        )
        .expect("valid");
        let text = super::render(&p);
        assert!(
            text.contains(
                "wave 1  a  job=ingest  depends_on=-  run_if=-  shards=4  retries=2 every 90s"
            ),
            "{text}"
        );
        assert!(text.contains("wave 1  b"), "{text}");
        assert!(text.contains("wave 2  c  job=tensorise  depends_on=a,b  run_if=ALL_DONE  shards=1  retries=0  timeout=2h (retried)"), "{text}");
    }

    #[test]
    fn plan_shows_promote_and_export_targets() {
        let p = load_str(
            "name: t\nlake: ./l\nsources: { s: { local: { path: ./m } } }\nstages:\n  a: { job: ingest, sources: [s], model_id: ft }\n  p: { job: promote, depends_on: [a], model: s, name: tuned, alias: champion, gates: ['max(nan_count) = 0'] }\n  e: { job: export, depends_on: [p], model: tuned@champion, to: ./out }\n",
            "t.yaml",
        )
        .expect("valid");
        let text = super::render(&p);
        assert!(
            text.contains("wave 2  p  job=promote  depends_on=a  run_if=ALL_SUCCESS  shards=1  retries=0  timeout=-  model=ft@main -> tuned@champion, 1 gate"),
            "{text}"
        );
        assert!(
            text.contains("wave 3  e  job=export")
                && text.contains("model=tuned@champion -> ./out"),
            "{text}"
        );
    }
}
