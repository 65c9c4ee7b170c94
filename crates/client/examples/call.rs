#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! A data call as an agency system:
//!
//! ```text
//! cargo run -p truc-client --example call -- \
//!     NODE_ADDRESS NODE_NAME CA CERT KEY AGENCY SERVICE JSON
//! ```
//!
//! e.g. `127.0.0.1:7443 lgsp-langson pki/ca.pem pki/clients/dms.pem
//! pki/clients/dms-key.pem 000.00.00.H37 000.00.00.G22/citizen-lookup/v1
//! '{"citizen_id":"001099012345"}'`.

use std::{process::ExitCode, time::Duration};

use truc_client::Client;
use truc_pki::TlsFiles;
use truc_proto::v1::CallRequest;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, server_name, ca, cert, key, agency, service, json] = args.as_slice() else {
        eprintln!("usage: call NODE_ADDRESS NODE_NAME CA CERT KEY AGENCY SERVICE JSON");
        return ExitCode::from(2);
    };
    let tls = TlsFiles::new(ca.into(), cert.into(), key.into());
    let result = async {
        let client = Client::connect(address, server_name, &tls)?;
        let request = CallRequest {
            client_agency: agency.clone(),
            service: service.clone(),
            content_type: "application/json".into(),
            payload: json.clone().into_bytes().into(),
            ..CallRequest::default()
        };
        client.call(request, Some(Duration::from_secs(30))).await
    }
    .await;
    match result {
        Ok(response) => {
            println!("{}", String::from_utf8_lossy(&response.payload));
            if let Some(receipt) = response.receipt {
                eprintln!(
                    "transaction {} is leaf {} of the hub's audit log",
                    receipt.transaction_id, receipt.record_index
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // A refusal keeps its gRPC code, e.g. PermissionDenied.
            eprintln!("call failed ({:?}): {e}", e.code());
            ExitCode::FAILURE
        }
    }
}
