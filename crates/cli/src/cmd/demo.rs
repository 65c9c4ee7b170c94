//! `truc demo`: a hub, two nodes and demo backends on this machine, with
//! sample traffic both ways and a table of what the hub counted.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use bytes::Bytes;
use clap::Args;
use truc_demo::{
    CITIZEN_LOOKUP, DemoOptions, Deployment, G22, H37, H37_DEPT, HOUSEHOLD_REGISTRY,
    MINISTRY_CLIENT, MINISTRY_NODE, PROVINCE_CLIENT, PROVINCE_NODE,
};
use truc_ops::config::ClientConfig;
use truc_proto::v1::CallRequest;

use super::{CliError, failed, interrupted, report, table};

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Where certificates, configs, sled data and demo.json go (reused if present).
    #[arg(long, default_value = "./truc-data")]
    data: PathBuf,
    /// Stop after this many seconds (default: serve until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Sample calls to make in each direction.
    #[arg(long, default_value_t = 20)]
    calls: u32,
    /// Hub replicas to run (each its own data, certificate, audit key and
    /// log; the nodes spread calls over them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    hubs: u16,
}

pub(super) async fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    let deployment = Deployment::start(DemoOptions {
        vxp: true,
        hubs: usize::from(args.hubs),
        ..DemoOptions::new(&args.data)
    })
    .await
    .map_err(failed)?;
    let demo_json = args.data.join("demo.json");
    let described = serde_json::to_string_pretty(&deployment.describe()).map_err(failed)?;
    std::fs::write(&demo_json, described)
        .map_err(|e| failed(format!("cannot write {}: {e}", demo_json.display())))?;
    println!(
        "truc demo: hub on {}, node {MINISTRY_NODE} ({G22}) on {}, node {PROVINCE_NODE} ({H37}, {H37_DEPT}) on {}",
        deployment.hub().addr(),
        deployment
            .node(MINISTRY_NODE)
            .map(|n| n.addr().to_string())
            .unwrap_or_default(),
        deployment
            .node(PROVINCE_NODE)
            .map(|n| n.addr().to_string())
            .unwrap_or_default(),
    );

    let sent = drive_traffic(&deployment, args.calls).await?;
    let documents = drive_documents(&deployment).await? + drive_vxp(&deployment).await?;
    println!(
        "\nsent {sent} sample calls and {documents} documents (delivered, statuses returned); the hub counts (all runs kept in {}):\n",
        args.data.display()
    );
    let admin = ClientConfig::load(&deployment.files.admin_config)?;
    let (per_replica, rows) = merged_counts(&deployment, &admin).await?;
    table::print(&rows);
    if per_replica.len() > 1 {
        println!(
            "
per hub replica:"
        );
        for (name, total) in &per_replica {
            println!("  {name}: {total} transactions");
        }
    }
    print_tree_head(&admin).await?;

    println!("\nendpoints and certificates: {}", demo_json.display());
    println!(
        "hub dashboard: http://{0}/  (Prometheus metrics: http://{0}/metrics)",
        deployment.hub().ops_addr()
    );
    println!(
        "try: truc call --config {} --as {H37} --service {CITIZEN_LOOKUP} --data '{{\"id\":\"001089012345\"}}'",
        deployment
            .files
            .client_configs
            .iter()
            .find(|(c, _)| c == PROVINCE_CLIENT)
            .map(|(_, p)| p.display().to_string())
            .unwrap_or_default()
    );
    let pki = &deployment.files.pki;
    println!(
        "prove a transaction is in the hub's log: truc audit prove --config {} --public-key {} --tx TX",
        deployment.files.admin_config.display(),
        deployment.files.pki.audit_public_key().display()
    );
    println!(
        "or:  grpcurl -cacert {0}/ca.crt -cert {0}/admin-admin.crt -key {0}/admin-admin.key -servername hub {1} list",
        pki.dir.display(),
        deployment.hub().addr()
    );

    match args.duration {
        Some(secs) => {
            println!("\nserving for {secs} s (Ctrl-C stops earlier)");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(secs)) => {}
                () = interrupted() => {}
            }
        }
        None => {
            println!("\nserving until Ctrl-C");
            interrupted().await;
        }
    }
    let replicas: Vec<String> = deployment
        .files
        .replica_configs
        .iter()
        .map(|(name, _)| name.clone())
        .collect();
    deployment.stop().await.map_err(failed)?;
    println!(
        "stopped cleanly; check the hub's log with: truc audit verify --data {}",
        args.data.join("hub").display()
    );
    if !replicas.is_empty() {
        // Each replica's key is found beside its data directory.
        let dirs: Vec<String> = std::iter::once("hub".to_string())
            .chain(replicas)
            .map(|name| format!("--data {}", args.data.join(name).display()))
            .collect();
        println!(
            "and every replica's, each with its own key: truc audit verify {}",
            dirs.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Calls both ways: the province asks the ministry's citizen lookup (some for
/// unknown citizens), its department does too, the ministry asks the
/// province's household registry, and the department tries a service it has
/// no grant for. Returns how many calls were made.
async fn drive_traffic(d: &Deployment, calls: u32) -> Result<u32, CliError> {
    let province = d
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .map_err(failed)?;
    let ministry = d
        .agency_client(MINISTRY_NODE, MINISTRY_CLIENT)
        .map_err(failed)?;
    let mut tasks = Vec::new();
    for i in 0..calls {
        // Every fifth citizen is unknown, so the table shows NOT_FOUND too.
        let id = if i % 5 == 4 {
            format!("000{:09}", i)
        } else {
            format!("0010890{:05}", i)
        };
        let plan = [
            (province.clone(), H37, CITIZEN_LOOKUP, id.clone()),
            (ministry.clone(), G22, HOUSEHOLD_REGISTRY, id.clone()),
            (
                province.clone(),
                H37_DEPT,
                if i % 4 == 0 {
                    HOUSEHOLD_REGISTRY
                } else {
                    CITIZEN_LOOKUP
                },
                id,
            ),
        ];
        for (mut client, agency, service, id) in plan {
            tasks.push(tokio::spawn(async move {
                client
                    .call(CallRequest {
                        client_agency: agency.into(),
                        service: service.into(),
                        content_type: "application/json".into(),
                        payload: Bytes::from(format!("{{\"id\":\"{id}\"}}")),
                        ..CallRequest::default()
                    })
                    .await
                    .map(|_| ())
            }));
        }
    }
    let mut made = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => made += 1,
            Ok(Err(status)) => {
                made += 1;
                tracing::debug!(%status, "sample call refused");
            }
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(made)
}

/// Each hub replica's total and the merged rows of all replicas: their
/// `GetStats` merged exactly, as `truc report` merges them.
async fn merged_counts(
    d: &Deployment,
    admin: &ClientConfig,
) -> Result<
    (
        Vec<(String, u64)>,
        std::collections::BTreeMap<table::RowKey, u64>,
    ),
    CliError,
> {
    let at_each: Vec<(String, ClientConfig)> = d
        .hubs()
        .into_iter()
        .map(|(name, hub)| {
            let at_replica = ClientConfig {
                address: hub.addr().to_string(),
                ..admin.clone()
            };
            (name.to_string(), at_replica)
        })
        .collect();
    report::merged_rows(&at_each).await
}

/// Prints the hub's latest signed tree head, and how to check it.
async fn print_tree_head(admin: &ClientConfig) -> Result<(), CliError> {
    let mut audit =
        truc_proto::v1::audit_client::AuditClient::new(admin.channel().map_err(failed)?);
    let head = audit
        .get_tree_head(truc_proto::v1::GetTreeHeadRequest { tree_size: 0 })
        .await
        .map_err(|s| failed(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    println!(
        "\nhub audit log, signed tree head: size {}, root {}, at {} ms since the epoch, key {}",
        head.tree_size,
        hex(&head.root_hash),
        head.timestamp_unix_ms,
        hex(&head.key_id)
    );
    Ok(())
}

/// Documents both ways: Lạng Sơn sends a report to the Government Office,
/// which sends a directive back; each recipient accepts (03) and starts
/// processing (05), and the statuses travel back to the senders. Waits until
/// the senders' tracking shows it. Returns how many documents were sent.
async fn drive_documents(d: &Deployment) -> Result<u32, CliError> {
    use truc_proto::v1::UpdateStatusRequest;
    let province = truc_client::Client::from_grpc(
        d.agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
            .map_err(failed)?,
    );
    let ministry = truc_client::Client::from_grpc(
        d.agency_client(MINISTRY_NODE, MINISTRY_CLIENT)
            .map_err(failed)?,
    );
    let envelope = sample_envelope();
    let plan = [
        (
            H37,
            G22,
            "UBND-VP",
            "Báo cáo tình hình kinh tế - xã hội tháng 11",
        ),
        (
            G22,
            H37,
            "VPCP-TTĐT",
            "Thông báo ý kiến chỉ đạo của Thủ tướng Chính phủ",
        ),
    ];
    let mut sent = 0;
    for (from, to, notation, subject) in plan {
        let env = envelope(from, to, notation, subject);
        let (sender_client, recipient_client) = if from == H37 {
            (&province, &ministry)
        } else {
            (&ministry, &province)
        };
        sender_client
            .send_document(env.clone(), Vec::new())
            .await
            .map_err(|e| failed(format!("sending a sample document: {e}")))?;
        sent += 1;
        let status = |want: &'static str| {
            let doc = env.document_id.clone();
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                sender_client
                    .wait_for_status(from, &doc, to, truc_client::has_status(want), deadline)
                    .await
                    .map_err(|e| failed(format!("document {doc} did not reach status {want}: {e}")))
            }
        };
        status("01").await?;
        for code in ["03", "05"] {
            recipient_client
                .update_status(UpdateStatusRequest {
                    recipient: to.into(),
                    sender: from.into(),
                    document_id: env.document_id.clone(),
                    status: code.into(),
                    description: "demo".into(),
                    staff: None,
                })
                .await
                .map_err(failed)?;
        }
        status("05").await?;
    }
    Ok(sent)
}

/// The sample documents' envelope, `(from, to, notation, subject)` →
/// envelope: dated today, numbered per run (so a demo kept between runs
/// sends new documents), without attachments.
fn sample_envelope() -> impl Fn(&str, &str, &str, &str) -> truc_proto::v1::Envelope {
    use truc_proto::v1::{DocumentCode, Envelope, Organ, PromulgationInfo};
    let now = truc_ops::now_ms();
    let date = truc_audit::day_of(now).replace('-', "/");
    let number = (now / 1000 % 1_000_000).to_string();
    move |from, to, notation, subject| Envelope {
        from: Some(Organ {
            organ_id: from.into(),
            ..Organ::default()
        }),
        to: vec![Organ {
            organ_id: to.into(),
            ..Organ::default()
        }],
        code: Some(DocumentCode {
            code_number: number.clone(),
            code_notation: notation.into(),
        }),
        promulgation_info: Some(PromulgationInfo {
            place: String::new(),
            promulgation_date: date.clone(),
        }),
        subject: subject.into(),
        document_id: format!("{from},{date},{number}/{notation}"),
        ..Envelope::default()
    }
}

/// One document each way through the nodes' VXP listeners, sent as the VXP
/// SDK does (`sendEdoc`: the edXML file, CRLF, signed headers).
async fn drive_vxp(d: &Deployment) -> Result<u32, CliError> {
    let described = d.describe();
    let envelope = sample_envelope();
    let plan = [
        (
            MINISTRY_NODE,
            MINISTRY_CLIENT,
            G22,
            H37,
            "VPCP-VXP",
            "Công văn gửi qua VXP",
        ),
        (
            PROVINCE_NODE,
            PROVINCE_CLIENT,
            H37,
            G22,
            "UBND-VXP",
            "Báo cáo gửi qua VXP",
        ),
    ];
    let mut sent = 0;
    for (node, client, from, to, notation, subject) in plan {
        let vxp = described["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["id"] == node))
            .map(|n| &n["vxp"])
            .ok_or_else(|| failed(format!("no VXP listener on {node} in demo.json")))?;
        let addr = vxp["url"]
            .as_str()
            .and_then(|u| u.strip_prefix("http://"))
            .ok_or_else(|| failed(format!("no VXP URL for {node}")))?;
        let system = vxp["system"]["id"].as_str().unwrap_or_default();
        let secret = vxp["system"]["secret"].as_str().unwrap_or_default();
        let envelope = envelope(from, to, notation, subject);
        let mut file = Vec::new();
        truc_edxml::write_package(
            &mut file,
            &envelope,
            &truc_edxml::Preserved::default(),
            &mut truc_edxml::Memory::default(),
        )
        .map_err(|e| failed(format!("writing a sample edXML package: {e}")))?;
        let answer = send_edoc(addr, system, secret, from, &file).await?;
        if answer["status"] != "OK" {
            return Err(failed(format!("VXP sendEdoc on {node} refused: {answer}")));
        }
        // Delivered and acknowledged, like the gRPC samples, before the counts.
        let tracker =
            truc_client::Client::from_grpc(d.agency_client(node, client).map_err(failed)?);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        tracker
            .wait_for_status(
                from,
                &envelope.document_id,
                to,
                truc_client::has_status("01"),
                deadline,
            )
            .await
            .map_err(|e| {
                failed(format!(
                    "VXP document {} not delivered: {e}",
                    envelope.document_id
                ))
            })?;
        sent += 1;
    }
    Ok(sent)
}

/// `POST /sendEdoc` with the VXP SDK's headers; the JSON answer.
async fn send_edoc(
    addr: &str,
    system: &str,
    secret: &str,
    from: &str,
    file: &[u8],
) -> Result<serde_json::Value, CliError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let digest = ring::digest::digest(&ring::digest::SHA256, file);
    // The SDK's hash-file: each byte in hex without zero padding.
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:x}")).collect();
    let timestamp = "01012026T000000+0000";
    let keys = [
        ("systemid", system),
        ("servicetype", "eDoc"),
        ("messagetype", "edoc"),
        ("hash-file", hash.as_str()),
        ("from", from),
        ("timestamp", timestamp),
        ("Content-Type", "application/octet-stream"),
    ];
    let signed = serde_json::Value::Object(
        keys.iter()
            .map(|(k, v)| (format!("XroadVnpt-{k}"), serde_json::Value::from(*v)))
            .collect(),
    )
    .to_string();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hex::encode(ring::hmac::sign(&key, signed.as_bytes()).as_ref());
    let mut head =
        String::from("POST /sendEdoc HTTP/1.1\r\nContent-Type: application/octet-stream\r\n");
    for (k, v) in keys {
        head.push_str(&format!("XroadVnpt-{k}: {v}\r\n"));
    }
    let names: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
    head.push_str(&format!(
        "XroadVnpt-sign-header-key: {}\r\nXroadVnpt-sign-header: {signed}\r\nXroadVnpt-hash-header: {tag}\r\n\
         User-Agent: JAVASDKAgent/1.0.0 XRoad/VPCP\r\nXroadVnpt-version: 3.0.201608\r\n\
         Host: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        names.join(";"),
        file.len() + 2
    ));
    let io = |e: std::io::Error| failed(format!("VXP on {addr}: {e}"));
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    stream.write_all(file).await.map_err(io)?;
    stream.write_all(b"\r\n").await.map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.map_err(io)?;
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &answer[i + 4..])
        .ok_or_else(|| failed(format!("VXP on {addr}: no HTTP answer")))?;
    serde_json::from_slice(body).map_err(|e| failed(format!("VXP on {addr}: not JSON: {e}")))
}
