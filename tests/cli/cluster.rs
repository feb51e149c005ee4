//! The binary against a 3-master Redis Cluster: queues on every master are
//! listed and acted on, health checks every master, and a plain URL to a
//! cluster node is refused with the URL to use.

use std::process::Command;

use flagship_worker::{broker::redis::RedisBroker, testing::redis_cluster::RedisCluster, DeadLetterQueue};
use serde_json::{json, Value};

use crate::{dead_job, queue, stderr, stdout};

/// Runs the binary with `REDIS_URL` set to `url`.
fn cli(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flagship-worker"))
        .env("REDIS_URL", url)
        .env_remove("DATABASE_URL")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn cli_json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = cli(url, &all);
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&output)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_list_and_act_on_queues_of_every_master() {
    let Some(cluster) = tokio::task::block_in_place(|| RedisCluster::start(3, 0)) else {
        return;
    };
    // One queue per master.
    let mut names: Vec<String> = Vec::new();
    for master in 0..3 {
        let name = (0..)
            .map(|i| format!("orders{i}"))
            .find(|n| cluster.master_of_queue(n) == Some(master))
            .unwrap();
        names.push(name);
    }
    let url = cluster.url();
    let broker = RedisBroker::connect(url.clone()).await.unwrap();
    let mut ids = Vec::new();
    for name in &names {
        ids.push(dead_job(&broker, name, "charge", json!({"n": 1}), &["card declined"]).await);
    }

    let queues = cli_json(&url, &["queues"]);
    let mut listed: Vec<(String, u64)> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["queue"].as_str().unwrap().to_owned(), q["dead"].as_u64().unwrap()))
        .collect();
    listed.sort();
    let mut expected: Vec<(String, u64)> = names.iter().map(|n| (n.clone(), 1)).collect();
    expected.sort();
    assert_eq!(listed, expected);

    let dead = cli_json(&url, &["dlq", "list"]);
    assert_eq!(dead["jobs"].as_array().unwrap().len(), 3, "{dead}");

    let retried = cli_json(&url, &["dlq", "retry-all", "--yes"]);
    assert_eq!(retried["retried"], 3, "{retried}");
    for (name, id) in names.iter().zip(&ids) {
        assert!(
            broker.get_dead(&queue(name), *id).await.unwrap().is_none(),
            "{name} retried"
        );
    }

    // Every master answers, and the retried jobs of each master's queue
    // are seen (ready, with no worker serving them: degraded).
    let health = cli_json(&url, &["health"]);
    assert_eq!(health["checks"][0]["name"], "broker", "{health}");
    assert_eq!(health["checks"][0]["status"], "ok", "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    for name in &names {
        assert!(
            health.to_string().contains(name.as_str()),
            "{name} missing from {health}"
        );
    }

    let plain = cli(&format!("redis://127.0.0.1:{}", cluster.node(0).port()), &["queues"]);
    assert!(!plain.status.success(), "a plain URL to a cluster node is refused");
    assert!(stderr(&plain).contains("redis+cluster://"), "{}", stderr(&plain));
}
