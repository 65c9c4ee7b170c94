//! `truc call`: a data call as an agency system.

use std::{io::Read, io::Write, path::PathBuf, process::ExitCode, time::Duration};

use bytes::Bytes;
use clap::Args;
use truc_client::CallOptions;
use truc_ops::config::ClientConfig;
use truc_proto::v1::CallRequest;

use super::{
    CliError,
    doc::{connect, rpc_failed},
    failed,
};

#[derive(Args)]
pub(crate) struct CallArgs {
    /// Client config: the node's address and this system's certificate.
    #[arg(long)]
    config: PathBuf,
    /// The agency the call is made for (electronic organ code).
    #[arg(long = "as")]
    agency: String,
    /// Service id, e.g. 000.00.00.G22/citizen-lookup/v1.
    #[arg(long)]
    service: String,
    /// The request body: @FILE, or - for standard input, or the text itself.
    #[arg(long)]
    data: String,
    /// Content type of the request body.
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// Deadline for the whole call, in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Why the call is made (a grant may require a purpose, or one of a list).
    #[arg(long, default_value = "")]
    purpose: String,
    /// The end user on whose behalf the call is made.
    #[arg(long, default_value = "")]
    end_user: String,
    /// The case or file number the call is made for.
    #[arg(long, default_value = "")]
    case: String,
}

fn read_data(data: &str) -> Result<Vec<u8>, CliError> {
    if data == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| failed(format!("cannot read standard input: {e}")))?;
        Ok(buf)
    } else if let Some(path) = data.strip_prefix('@') {
        std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {path}: {e}")))
    } else {
        Ok(data.as_bytes().to_vec())
    }
}

pub(super) async fn run(args: CallArgs) -> Result<ExitCode, CliError> {
    let config = ClientConfig::load(&args.config)?;
    let payload = read_data(&args.data)?;
    if !(args.timeout > 0.0 && args.timeout < 86_400.0) {
        return Err(CliError::Usage(
            "--timeout must be between 0 and 86400 seconds".into(),
        ));
    }
    // Data calls carry their whole payload in one message: no size limit here.
    let client = connect(&config)?.max_message_bytes(usize::MAX);
    let request = CallRequest {
        client_agency: args.agency,
        service: args.service,
        content_type: args.content_type,
        payload: Bytes::from(payload),
        ..CallRequest::default()
    };
    let options = CallOptions::default()
        .timeout(Duration::from_secs_f64(args.timeout))
        .purpose(args.purpose)
        .end_user(args.end_user)
        .case(args.case);
    let r = client
        .call_with(request, &options)
        .await
        .map_err(rpc_failed)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&r.payload)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(failed)?;
    if let Some(receipt) = r.receipt {
        let head = receipt
            .tree_head
            .as_ref()
            .map(|h| {
                format!(
                    "; signed tree head: size {} root {}",
                    h.tree_size,
                    hex::encode(&h.root_hash)
                )
            })
            .unwrap_or_default();
        eprintln!(
            "receipt: transaction {} is leaf {} of the hub's audit log (leaf hash {}){head}",
            receipt.transaction_id,
            receipt.record_index,
            hex::encode(&receipt.leaf_hash),
        );
    }
    Ok(ExitCode::SUCCESS)
}
