#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Sends a document with attachments, prints its tracking each time it
//! changes, and stops once every recipient has accepted it (03) or after
//! ten minutes:
//!
//! ```text
//! cargo run -p truc-client --example send_and_wait -- \
//!     NODE_ADDRESS NODE_NAME CA CERT KEY SENDER RECIPIENT [FILE...]
//! ```

use std::{
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use truc_client::{Client, Error, Upload, has_status};
use truc_pki::TlsFiles;
use truc_proto::v1::{DocumentCode, Envelope, Organ, PromulgationInfo};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some([address, server_name, ca, cert, key, sender, recipient]), files) = (
        args.get(..7).and_then(|a| <&[String; 7]>::try_from(a).ok()),
        args.get(7..),
    ) else {
        eprintln!(
            "usage: send_and_wait NODE_ADDRESS NODE_NAME CA CERT KEY SENDER RECIPIENT [FILE...]"
        );
        return ExitCode::from(2);
    };
    let tls = TlsFiles::new(ca.into(), cert.into(), key.into());
    match run(
        address,
        server_name,
        &tls,
        sender,
        recipient,
        files.unwrap_or_default(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    address: &str,
    server_name: &str,
    tls: &TlsFiles,
    sender: &str,
    recipient: &str,
    files: &[String],
) -> Result<(), Error> {
    let client = Client::connect(address, server_name, tls)?;
    let mut uploads = Vec::new();
    for f in files {
        uploads.push(Upload::file(f).await?);
    }
    let number = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 86_400);
    let organ = |id: &str| Organ {
        organ_id: id.into(),
        ..Organ::default()
    };
    let envelope = Envelope {
        from: Some(organ(sender)),
        to: vec![organ(recipient)],
        code: Some(DocumentCode {
            code_number: number.to_string(),
            code_notation: "EXAMPLE".into(),
        }),
        promulgation_info: Some(PromulgationInfo {
            place: String::new(),
            promulgation_date: "2026/12/01".into(),
        }),
        subject: "sent by the send_and_wait example".into(),
        document_id: format!("{sender},2026/12/01,{number}/EXAMPLE"),
        ..Envelope::default()
    };
    let sent = client.send_document(envelope, uploads).await?;
    println!("sent {} (duplicate: {})", sent.document_id, sent.duplicate);

    // Every change as it comes…
    let mut watch = client.watch_tracking(sender, &sent.document_id).await?;
    let printer = tokio::spawn(async move {
        while let Ok(Some(tracking)) = watch.next().await {
            for r in &tracking.recipients {
                println!(
                    "{}: delivery {}, status {:?}",
                    r.recipient, r.delivery, r.status
                );
            }
        }
    });
    // …and, separately, the wait for the one that matters.
    let deadline = Instant::now() + Duration::from_secs(600);
    let accepted = client
        .wait_for_status(
            sender,
            &sent.document_id,
            recipient,
            has_status("03"),
            deadline,
        )
        .await;
    printer.abort();
    let accepted = accepted?;
    println!(
        "{recipient} accepted it after {} attempts",
        accepted.attempts
    );
    Ok(())
}
