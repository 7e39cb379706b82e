//! The deployment examples in deploy/ hold what the README promises of them: the Kubernetes manifest is an
//! Indexed Job with per-index retries, non-root and resource-bounded, passing each pod's index to
//! `--shard`, with its example job file a sharded job ferry reads (as many shards as completions); the
//! Dockerfile is multi-stage and runs as a non-root user. `scripts/check-deploy` checks both against their
//! schemas and linters (kubernetes-validate, hadolint); this test needs neither.

use serde_yaml::Value;

fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(crate::support::root().join("deploy/ferry-shards-job.yaml"))
        .expect("deploy/ferry-shards-job.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in the manifest"))
}

#[test]
fn the_kubernetes_manifest_is_an_indexed_job_running_one_shard_per_index() {
    let docs = documents();
    let job = of_kind(&docs, "Job");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    assert!(spec["backoffLimitPerIndex"]
        .as_u64()
        .is_some_and(|n| n >= 1));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert!(pod["securityContext"]["runAsUser"]
        .as_u64()
        .is_some_and(|u| u > 0));
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = args.iter().position(|a| *a == "--shard").expect("--shard");
    assert_eq!(args[at + 1], "$(JOB_COMPLETION_INDEX)");
    assert_eq!(args[0], "run");
    assert!(container["resources"]["limits"]["memory"]
        .as_str()
        .is_some());
    assert!(container["resources"]["requests"]["cpu"].as_str().is_some());
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    // Secrets come from a Secret, as environment variables; none is in the job file.
    let env = container["env"].as_sequence().unwrap();
    assert!(env.iter().any(|e| e["name"].as_str() == Some("PGPASSWORD")
        && e["valueFrom"]["secretKeyRef"]["name"].as_str().is_some()));
    // The job file comes from the ConfigMap, and is a sharded job with one shard per completion.
    let config = of_kind(&docs, "ConfigMap");
    let text = config["data"]["job.json"]
        .as_str()
        .expect("job.json in the ConfigMap");
    let sharded = ferry::shard::ShardedJob::from_json(text).expect("a ferry job");
    assert_eq!(
        sharded.shards.len() as u64,
        spec["completions"].as_u64().unwrap()
    );
    assert!(!text.contains("change-me"));
    for i in 0..sharded.shards.len() {
        sharded.job_of(i).expect("each index is a shard");
    }
}

#[test]
fn the_dockerfile_is_multi_stage_and_runs_as_a_non_root_user() {
    let text = std::fs::read_to_string(crate::support::root().join("deploy/Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].contains(" AS build"), "{froms:?}");
    assert!(text.contains("COPY --from=build"));
    let user = text
        .lines()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(text.contains("--locked"), "builds what Cargo.lock pins");
}
