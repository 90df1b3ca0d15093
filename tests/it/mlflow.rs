//! Promotion with a real MLflow server: metrics from a run feed the gates, the
//! registry gets one version per promoted weights with gold's alias, alias
//! moves follow, and a registry that was unreachable is put back in sync.

use weightlake_connectors::mlflow::MlflowClient;

use crate::support::*;

fn with_mlflow(args: &[&str], uri: &str) -> std::process::Output {
    bin()
        .args(args)
        .env("MLFLOW_TRACKING_URI", uri)
        .output()
        .expect("spawn")
}

#[tokio::test(flavor = "multi_thread")]
async fn promotions_register_versions_and_aliases_stay_in_sync() {
    let uri = mlflow_uri();
    let client = MlflowClient::new(&uri).expect("client");
    let tmp = tempfile::tempdir().expect("tmp");
    let (lake, _, _, _) = base_and_finetune_lake(tmp.path());
    let name = format!("minilm-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);

    // The fine-tune's eval run, as a trainer would have logged it.
    let exp = client
        .experiment_id("trainer-evals")
        .await
        .expect("experiment");
    let eval_run = client.create_run(&exp, "eval", &[]).await.expect("run");
    client
        .log_batch(
            &eval_run,
            &[],
            &[("eval_loss".into(), 1.7), ("accuracy".into(), 0.91)],
        )
        .await
        .expect("log");

    // Gates read the run's metrics; the registry gets version 1 @champion.
    let out = with_mlflow(
        &[
            "promote",
            "base@main",
            "--lake",
            &lake,
            "--name",
            &name,
            "--alias",
            "champion",
            "--metrics-from-run",
            &eval_run,
            "--gate",
            "loss:fail:eval_loss < 2.0",
            "--gate",
            "acc:fail:accuracy > 0.9",
        ],
        &uri,
    );
    assert!(out.status.success(), "{}", text(&out));
    let v1 = client
        .get_alias(&name, "champion")
        .await
        .expect("alias")
        .expect("set");
    // Promoting the same weights again registers nothing new.
    let out = with_mlflow(
        &[
            "promote",
            "base@main",
            "--lake",
            &lake,
            "--name",
            &name,
            "--alias",
            "champion",
        ],
        &uri,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        client.aliases(&name).await.expect("aliases"),
        vec![("champion".into(), v1.clone())]
    );
    // ... and logs no second promotion run for the same weights.
    let exp = client
        .experiment_id("weightlake")
        .await
        .expect("experiment");
    let runs = mlflow_runs(&uri, &exp, Some(&format!("promote {name}"))).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    // A gate on the run's metric can also stop a promotion.
    let out = with_mlflow(
        &[
            "promote",
            "ft@main",
            "--lake",
            &lake,
            "--name",
            &name,
            "--metrics-from-run",
            &eval_run,
            "--gate",
            "loss:fail:eval_loss < 1.0",
        ],
        &uri,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Gate names MLflow keys cannot tell apart (`a+b`, `a#b`) and names in
    // other scripts each get their own tag; the promotion is not refused.
    let other = format!("{name}-tags");
    let out = with_mlflow(
        &[
            "promote",
            "base@main",
            "--lake",
            &lake,
            "--name",
            &other,
            "--gate",
            "a+b:warn:count(*) > 0",
            "--gate",
            "a#b:warn:count(*) > 0",
            "--gate",
            "größe:warn:count(*) > 0",
        ],
        &uri,
    );
    assert!(out.status.success(), "{}", text(&out));
    let tagged = mlflow_runs(&uri, &exp, Some(&format!("promote {other}"))).await;
    let keys: Vec<String> = tagged[0]["data"]["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["key"].as_str())
        .filter(|k| k.starts_with("weightlake.gate."))
        .map(str::to_string)
        .collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    // The candidate turned away is tracked too: a FAILED run saying which
    // gate stopped it.
    let rejected = mlflow_runs(&uri, &exp, Some(&format!("promote {name} (rejected)"))).await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["info"]["status"], "FAILED", "{rejected:?}");
    let gate = rejected[0]["data"]["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .find(|t| t["key"] == "weightlake.gate.loss")
        .and_then(|t| t["value"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        gate.starts_with("failed") && gate.contains("eval_loss < 1.0"),
        "{gate}"
    );

    let out = with_mlflow(
        &[
            "promote",
            "ft@main",
            "--lake",
            &lake,
            "--name",
            &name,
            "--alias",
            "candidate",
        ],
        &uri,
    );
    assert!(out.status.success(), "{}", text(&out));
    let v2 = client
        .get_alias(&name, "candidate")
        .await
        .expect("alias")
        .expect("set");
    assert_ne!(v1, v2);

    // Moving an alias in gold moves it in the registry.
    let out = with_mlflow(
        &[
            "models", "alias", "set", &name, "champion", "2", "--lake", &lake,
        ],
        &uri,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        client.get_alias(&name, "champion").await.expect("alias"),
        Some(v2.clone())
    );

    // With the registry unreachable, the move lands in gold and the command fails
    // loudly, naming the fix...
    let out = with_mlflow(
        &[
            "models", "alias", "set", &name, "champion", "1", "--lake", &lake,
        ],
        "http://127.0.0.1:1",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("models sync"), "{}", text(&out));
    assert_eq!(
        client.get_alias(&name, "champion").await.expect("alias"),
        Some(v2.clone())
    );
    // ... and sync brings the registry back in line with gold.
    client
        .set_alias(&name, "stray", &v1)
        .await
        .expect("stray alias");
    let out = with_mlflow(&["models", "sync", &name, "--lake", &lake], &uri);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        client.get_alias(&name, "champion").await.expect("alias"),
        Some(v1.clone())
    );
    assert_eq!(client.get_alias(&name, "stray").await.expect("alias"), None);
    assert_eq!(
        client.get_alias(&name, "candidate").await.expect("alias"),
        Some(v2)
    );
    // Moved without MLflow configured: gold moves, and the registry's
    // alias (unchanged) is named as out of date.
    let out = bin()
        .args([
            "models", "alias", "set", &name, "champion", "2", "--lake", &lake,
        ])
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("weightlake models sync {name}")),
        "{}",
        text(&out)
    );
    assert_eq!(
        client.get_alias(&name, "champion").await.expect("alias"),
        Some(v1)
    );
}
