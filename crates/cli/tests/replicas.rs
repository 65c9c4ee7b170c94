#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! `truc report` over several hub replicas: three hubs in this process, the
//! real binary merging their statistics; the merged rows equal the sum of
//! each replica's rows and the statistics of all their verified logs
//! together; a replica that does not answer fails the report, by name,
//! unless `--allow-partial`.

mod common;

use std::{collections::BTreeMap, path::Path};

use bytes::Bytes;
use common::*;
use truc_demo::{
    CITIZEN_LOOKUP, DemoOptions, Deployment, G22, H37, H37_DEPT, HOUSEHOLD_REGISTRY,
    MINISTRY_CLIENT, MINISTRY_NODE, PROVINCE_CLIENT, PROVINCE_NODE,
};
use truc_proto::v1::CallRequest;

/// `n` calls, a third of them refused (the department has no grant).
async fn traffic(d: &Deployment, n: u32) {
    let province = d
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    let ministry = d
        .agency_client(MINISTRY_NODE, MINISTRY_CLIENT)
        .expect("client");
    for i in 0..n {
        let (mut client, agency, service) = match i % 3 {
            0 => (province.clone(), H37, CITIZEN_LOOKUP),
            1 => (ministry.clone(), G22, HOUSEHOLD_REGISTRY),
            _ => (province.clone(), H37_DEPT, HOUSEHOLD_REGISTRY),
        };
        let _ = client
            .call(CallRequest {
                client_agency: agency.into(),
                service: service.into(),
                content_type: "application/json".into(),
                payload: Bytes::from(format!(r#"{{"id":"00108901{i:04}"}}"#)),
                ..CallRequest::default()
            })
            .await;
    }
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8").to_string()
}

fn report(configs: &[String], extra: &[&str]) -> Vec<String> {
    let mut args = vec!["report".to_string()];
    for c in configs {
        args.extend(["--config".to_string(), c.clone()]);
    }
    args.extend(["--format", "json", "--timeout", "20"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_over_three_replicas_is_the_exact_sum_and_a_silent_one_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    let mut replicas = Vec::new();
    for (i, calls) in [6u32, 9, 12].into_iter().enumerate() {
        let d = Deployment::start(DemoOptions::new(dir.path().join(format!("r{i}"))))
            .await
            .expect("deployment");
        traffic(&d, calls).await;
        replicas.push(d);
    }
    let configs: Vec<String> = replicas
        .iter()
        .map(|d| path(&d.files.admin_config))
        .collect();

    let merged = report_json(&truc_async(report(&configs, &[])).await);
    assert_eq!(merged["replicas"], 3);
    assert_eq!(merged["replicas_missing"], 0);
    assert_eq!(merged["total"]["count"], 27);
    assert_eq!(merged["total"]["errors"], 9);
    // The sum of each replica's own report, row by row.
    let mut summed: BTreeMap<Vec<String>, [u64; 4]> = BTreeMap::new();
    for c in &configs {
        let one = report_json(&truc_async(report(std::slice::from_ref(c), &[])).await);
        assert_eq!(one["replicas"], 1);
        for (k, n) in report_sums(&one) {
            let e = summed.entry(k).or_default();
            for (a, b) in e.iter_mut().zip(n) {
                *a += b;
            }
        }
    }
    assert_eq!(report_sums(&merged), summed);
    assert_eq!(summed.len(), 3, "three kinds of call");

    // A replica that does not answer: a config naming a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let text_of = |p: &str| std::fs::read_to_string(p).expect("read");
    let first = text_of(&configs[0]);
    let live_addr = first
        .lines()
        .find_map(|l| l.strip_prefix("address = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("address")
        .to_string();
    // Beside the first replica's config, so its relative TLS paths resolve.
    let dead = dir.path().join("r0").join("dead.toml");
    std::fs::write(&dead, first.replace(&live_addr, &dead_addr)).expect("write");
    // A config file of the first CA that lists the dead replica too.
    let listed = dir.path().join("r0").join("listed.toml");
    std::fs::write(
        &listed,
        first.replace(
            &format!("address = \"{live_addr}\""),
            &format!("address = \"{live_addr}\"\naddresses = [\"{dead_addr}\"]"),
        ),
    )
    .expect("write");
    let pki_dir = Path::new(&configs[0]).parent().expect("dir");
    assert_eq!(
        listed.parent(),
        Some(pki_dir),
        "relative TLS paths still resolve"
    );

    for set in [
        vec![configs[0].clone(), path(&dead), configs[1].clone()],
        vec![path(&listed)],
    ] {
        let out = truc_async(report(&set, &[])).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(
            err.contains(&dead_addr) && err.contains("did not answer"),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "no partial report");

        let partial = truc_async(report(&set, &["--allow-partial"])).await;
        let err = text(&partial.stderr);
        assert!(
            err.contains(&format!("missing replica {dead_addr}")),
            "{err}"
        );
        let v = report_json(&partial);
        assert_eq!(v["replicas_missing"], 1);
        assert_eq!(v["replicas"], set.len() as u64 + u64::from(set.len() == 1));
    }
    // The same replica twice would count it twice: a usage error.
    let twice = truc_async(report(&[configs[0].clone(), configs[0].clone()], &[])).await;
    assert_eq!(twice.status.code(), Some(2), "{}", text(&twice.stderr));
    assert!(
        text(&twice.stderr).contains("given twice"),
        "{}",
        text(&twice.stderr)
    );
    // The table says so too.
    let mut args = report(&[path(&listed)], &["--allow-partial"]);
    args.retain(|a| a != "--format" && a != "json");
    let table = truc_async(args).await;
    assert!(
        text(&table.stdout).contains("PARTIAL: merged over 1 of 2 hub replicas"),
        "{}",
        text(&table.stdout)
    );

    // The merged rows equal the statistics of the three verified logs
    // together, percentiles included.
    let mut union = BTreeMap::new();
    for (i, d) in replicas.into_iter().enumerate() {
        d.stop().await.expect("stop");
        add_stats(
            &mut union,
            verified_stats(&dir.path().join(format!("r{i}")).join("hub")),
        );
    }
    assert_report_equals_logs(&merged, &union);
}
