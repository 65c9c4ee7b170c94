//! `truc audit`: checks of the audit log, offline (`verify`, with the heads
//! nodes witnessed), of a node's witnessed head (`head`), and against a
//! running hub (`prove`, `consistency`). Exit codes: 0 verified, 1 tampered
//! (or a proof that does not verify), 2 bad input, 3 could not check.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use truc_audit::{
    merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion},
    sth::{head_from_note, note_with_cosignatures, read_public_key, root_of, verify_tree_head},
};
use truc_ops::config::ClientConfig;
use truc_proto::v1::{
    GetConsistencyProofRequest, GetInclusionProofRequest, GetTreeHeadRequest, ListRecordsRequest,
    SignedTreeHead, audit_client::AuditClient, get_inclusion_proof_request::Leaf,
};
use truc_store::Store;

use super::{CliError, table};

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Recomputes a stopped hub's or node's log from its data directory: the
    /// records, the Merkle tree, every signed tree head, the hub receipts a
    /// node holds, and the counters. Names the first broken position. On a
    /// node, also lists the hub receipts that failed the node's checks
    /// (exit 1) or could not be checked.
    Verify(VerifyArgs),
    /// Fetches a transaction's record and an inclusion proof from the hub
    /// and verifies them against the latest signed tree head.
    Prove(ProveArgs),
    /// Verifies that a head the operator supplies (`--head`, a checkpoint
    /// file as `truc audit head` writes it from a node's store) is a prefix
    /// of the hub's log now. With `--from` instead, both heads come from the
    /// hub itself, which proves nothing against a hub that re-signs a
    /// rewritten log.
    Consistency(ConsistencyArgs),
    /// Prints the latest hub head a stopped node verified, as a C2SP signed
    /// checkpoint with the node's cosignature, and any evidence the node
    /// keeps of the hub contradicting itself (exit 1 then).
    Head(HeadArgs),
}

#[derive(Args)]
pub(crate) struct HeadArgs {
    /// The data directory of a node (the node must be stopped).
    #[arg(long)]
    data: PathBuf,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The data directory of a hub or a node (the process must be stopped).
    #[arg(long)]
    data: PathBuf,
    /// The hub's audit public key (hex), to check signatures; by default
    /// `pki/audit-signing.pub` beside the data directory, if present.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// The data directory of a stopped node that witnessed the hub's log
    /// (repeat for each): every head it verified must be the root of the
    /// hub's records, and it must hold no evidence of a contradiction.
    #[arg(long = "witness")]
    witnesses: Vec<PathBuf>,
}

#[derive(Args)]
pub(crate) struct ProveArgs {
    /// Client config for the hub (a node's or the admin's certificate).
    #[arg(long)]
    config: PathBuf,
    /// The transaction id (from a receipt or `x-truc-transaction-id`).
    #[arg(long)]
    tx: String,
    /// The hub's audit public key (hex).
    #[arg(long)]
    public_key: PathBuf,
}

#[derive(Args)]
pub(crate) struct ConsistencyArgs {
    /// Client config for the hub (a node's or the admin's certificate).
    #[arg(long)]
    config: PathBuf,
    /// The earlier head: a signed checkpoint file (`truc audit head`).
    #[arg(long, conflicts_with = "from", required_unless_present = "from")]
    head: Option<PathBuf>,
    /// The earlier tree size, its head fetched from the hub.
    #[arg(long)]
    from: Option<u64>,
    /// The later tree size (default: the latest).
    #[arg(long, default_value_t = 0)]
    to: u64,
    /// The hub's audit public key (hex).
    #[arg(long)]
    public_key: PathBuf,
}

pub(super) async fn run(command: AuditCommand) -> Result<ExitCode, CliError> {
    match command {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Prove(a) => prove(a).await,
        AuditCommand::Consistency(a) => consistency(a).await,
        AuditCommand::Head(a) => head(a),
    }
}

fn open_store(dir: &std::path::Path) -> Result<Store, CliError> {
    if !dir.join("db").exists() {
        return Err(CliError::Usage(format!(
            "{} holds no truc database",
            dir.display()
        )));
    }
    Store::open(dir).map_err(|e| CliError::CannotCheck(e.to_string()))
}

fn head(args: HeadArgs) -> Result<ExitCode, CliError> {
    let store = open_store(&args.data)?;
    let cannot = |e: truc_audit::AuditError| CliError::CannotCheck(e.to_string());
    let evidence = truc_audit::witness::evidence(&store).map_err(cannot)?;
    let Some(latest) = truc_audit::witness::latest(&store).map_err(cannot)? else {
        return Err(CliError::Usage(format!(
            "{}: this node has not verified a hub head yet",
            args.data.display()
        )));
    };
    let note = note_with_cosignatures(&latest);
    if note.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: the kept head (size {}) has no checkpoint form",
            args.data.display(),
            latest.tree_size
        )));
    }
    print!("{note}");
    for e in &evidence {
        eprintln!("EVIDENCE: {}", e.reason);
        for (what, h) in [("seen", &e.seen), ("conflicting", &e.conflicting)] {
            if let Some(h) = h {
                eprint!("{what} head:\n{}", note_with_cosignatures(h));
            }
        }
    }
    Ok(if evidence.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Checks the heads the nodes in `dirs` witnessed against the hub's
/// records; true when all match and no node holds evidence.
fn check_witnesses(
    hub: &Store,
    dirs: &[PathBuf],
    public_key: Option<&[u8]>,
) -> Result<bool, CliError> {
    let mut ok = true;
    for dir in dirs {
        let node = open_store(dir)?;
        let cannot =
            |e: truc_audit::AuditError| CliError::CannotCheck(format!("{}: {e}", dir.display()));
        // A node witnesses every hub replica's log; with the hub's key
        // known, only the heads of this log (signed with it) are checked.
        let of_this_log = |h: &SignedTreeHead| {
            public_key.is_none_or(|k| h.key_id.as_ref() == truc_audit::sth::key_id(k))
        };
        let mut heads: Vec<SignedTreeHead> = truc_audit::witness::latest_heads(&node)
            .map_err(cannot)?
            .into_iter()
            .filter(of_this_log)
            .collect();
        let evidence = truc_audit::witness::evidence(&node).map_err(cannot)?;
        for e in &evidence {
            println!(
                "TAMPERED: witness {} holds evidence: {}",
                dir.display(),
                e.reason
            );
            ok = false;
            heads.extend(e.seen.clone().filter(of_this_log));
        }
        if heads.is_empty() {
            println!("witness {}: no head verified yet", dir.display());
            continue;
        }
        for c in truc_audit::witness::check_witnessed(hub, &heads, public_key).map_err(cannot)? {
            match c.problem {
                None => println!(
                    "witness {}: the head of size {} it verified matches the hub's records",
                    dir.display(),
                    c.size
                ),
                Some(p) => {
                    println!(
                        "TAMPERED: witness {}, head of size {}: {p}",
                        dir.display(),
                        c.size
                    );
                    ok = false;
                }
            }
        }
    }
    Ok(ok)
}

fn key(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    read_public_key(path).map_err(CliError::Usage)
}

fn verify(args: VerifyArgs) -> Result<ExitCode, CliError> {
    if !args.data.join("db").exists() {
        return Err(CliError::CannotCheck(format!(
            "{} holds no truc database",
            args.data.display()
        )));
    }
    let key_path = args.public_key.clone().or_else(|| {
        let guess = args.data.parent()?.join("pki/audit-signing.pub");
        let guess = if guess.exists() {
            guess
        } else {
            // A node's directory sits one level deeper (nodes/ID).
            args.data.parent()?.parent()?.join("pki/audit-signing.pub")
        };
        guess.exists().then_some(guess)
    });
    let public_key = key_path.as_deref().map(key).transpose()?;
    let store = Store::open(&args.data).map_err(|e| CliError::CannotCheck(e.to_string()))?;
    let report = truc_audit::verify(&store, public_key.as_deref())
        .map_err(|e| CliError::CannotCheck(e.to_string()))?;
    table::print(&table::from_counts(&report.counts));
    if let Some(problem) = &report.problem {
        println!("TAMPERED: {problem}");
        if report.unreadable.len() > 1 {
            println!(
                "{} stored entries do not decode (skipped; everything else was checked)",
                report.unreadable.len()
            );
        }
        println!("{} records verified before it", report.records);
        return Ok(ExitCode::from(1));
    }
    // On a node: the hub receipts its checks flagged when they came.
    let receipts =
        truc_node::receipt_problems(&store).map_err(|e| CliError::CannotCheck(e.to_string()))?;
    let (unchecked, failed): (Vec<_>, Vec<_>) =
        receipts.iter().partition(|p| p.result == "unchecked");
    for p in &unchecked {
        println!(
            "receipt of transaction {} not checked: {}",
            p.transaction_id, p.reason
        );
    }
    if !failed.is_empty() {
        for p in &failed {
            println!(
                "RECEIPT FAILED ({}): transaction {}: {}",
                p.result, p.transaction_id, p.reason
            );
        }
        println!(
            "{} hub receipts failed the node's checks when they came: the hub's word did not hold",
            failed.len()
        );
        return Ok(ExitCode::from(1));
    }
    if !check_witnesses(&store, &args.witnesses, public_key.as_deref())? {
        return Ok(ExitCode::from(1));
    }
    println!(
        "verified: {} records, Merkle root {}, {} signed tree heads, {} hub receipts, counters equal the records",
        report.records,
        hex::encode(report.root),
        report.tree_heads,
        report.receipts
    );
    match key_path {
        Some(path) => {
            println!("signatures checked with {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        None if report.tree_heads == 0 => Ok(ExitCode::SUCCESS),
        None => Err(CliError::CannotCheck(
            "tree head and receipt signatures not checked: give --public-key".into(),
        )),
    }
}

/// Any failure to ask is "could not check".
fn unreachable(s: tonic::Status) -> CliError {
    CliError::CannotCheck(format!("{:?}: {}", s.code(), s.message()))
}

fn client(path: &std::path::Path) -> Result<AuditClient<tonic::transport::Channel>, CliError> {
    let config = ClientConfig::load(path)?;
    let channel = config
        .channel()
        .map_err(|e| CliError::CannotCheck(e.to_string()))?;
    Ok(AuditClient::new(channel))
}

/// A head that verifies with `key`, or the verdict "tampered".
fn checked_head(head: SignedTreeHead, key: &[u8]) -> Result<(SignedTreeHead, Hash), ExitCode> {
    if let Err(e) = verify_tree_head(&head, key) {
        println!("TAMPERED: tree head of size {}: {e}", head.tree_size);
        return Err(ExitCode::from(1));
    }
    match root_of(&head) {
        Some(root) => Ok((head, root)),
        None => {
            println!(
                "TAMPERED: tree head of size {} has a malformed root",
                head.tree_size
            );
            Err(ExitCode::from(1))
        }
    }
}

fn hashes(path: &[bytes::Bytes]) -> Option<Vec<Hash>> {
    path.iter().map(|h| h.as_ref().try_into().ok()).collect()
}

async fn prove(args: ProveArgs) -> Result<ExitCode, CliError> {
    let key = key(&args.public_key)?;
    let mut audit = client(&args.config)?;
    let records = audit
        .list_records(ListRecordsRequest {
            transaction_id: args.tx.clone(),
            ..ListRecordsRequest::default()
        })
        .await
        .map_err(unreachable)?
        .into_inner()
        .records;
    let Some(stored) = records.into_iter().next() else {
        return Err(CliError::CannotCheck(format!(
            "the hub shows no record of transaction {} to this certificate",
            args.tx
        )));
    };
    let leaf = leaf_hash(&stored.record_bytes);
    let head = audit
        .get_tree_head(GetTreeHeadRequest { tree_size: 0 })
        .await
        .map_err(unreachable)?
        .into_inner();
    let (head, root) = match checked_head(head, &key) {
        Ok(h) => h,
        Err(code) => return Ok(code),
    };
    let proof = audit
        .get_inclusion_proof(GetInclusionProofRequest {
            leaf: Some(Leaf::TransactionId(args.tx.clone())),
            tree_size: head.tree_size,
        })
        .await
        .map_err(unreachable)?
        .into_inner();
    let path = hashes(&proof.path);
    let ok = proof.leaf_index == stored.index
        && path
            .is_some_and(|p| verify_inclusion(&leaf, proof.leaf_index, head.tree_size, &p, &root));
    if ok {
        println!(
            "verified: transaction {} is leaf {} (hash {}) of the hub's log, included in the signed tree of size {} with root {}",
            args.tx,
            stored.index,
            hex::encode(leaf),
            head.tree_size,
            hex::encode(root)
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "TAMPERED: the inclusion proof of transaction {} (leaf {}) does not verify against the signed tree of size {}",
            args.tx, stored.index, head.tree_size
        );
        Ok(ExitCode::from(1))
    }
}

async fn consistency(args: ConsistencyArgs) -> Result<ExitCode, CliError> {
    let key = key(&args.public_key)?;
    let mut audit = client(&args.config)?;
    let head = |size: u64| {
        let mut audit = audit.clone();
        async move {
            audit
                .get_tree_head(GetTreeHeadRequest { tree_size: size })
                .await
                .map(|r| r.into_inner())
                .map_err(unreachable)
        }
    };
    let old = match (&args.head, args.from) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
            head_from_note(&text, &key)
                .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?
        }
        (None, Some(from)) => head(from).await?,
        (None, None) => return Err(CliError::Usage("give --head FILE or --from SIZE".into())),
    };
    let new = head(args.to).await?;
    let (old, old_root) = match checked_head(old, &key) {
        Ok(h) => h,
        Err(code) => return Ok(code),
    };
    let (new, new_root) = match checked_head(new, &key) {
        Ok(h) => h,
        Err(code) => return Ok(code),
    };
    if new.tree_size < old.tree_size {
        println!(
            "TAMPERED: the hub's head has size {}, smaller than the head of size {} it signed before",
            new.tree_size, old.tree_size
        );
        return Ok(ExitCode::from(1));
    }
    if new.tree_size == old.tree_size {
        if new_root == old_root {
            println!(
                "verified: the hub's head of size {} has the root {} supplied",
                new.tree_size,
                hex::encode(new_root)
            );
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "TAMPERED: two roots signed for size {}: {} supplied, {} now",
            new.tree_size,
            hex::encode(old_root),
            hex::encode(new_root)
        );
        return Ok(ExitCode::from(1));
    }
    let proof = audit
        .get_consistency_proof(GetConsistencyProofRequest {
            from_size: old.tree_size,
            to_size: new.tree_size,
        })
        .await
        .map_err(unreachable)?
        .into_inner();
    let ok = hashes(&proof.path).is_some_and(|p| {
        verify_consistency(old.tree_size, new.tree_size, &old_root, &new_root, &p)
    });
    if ok {
        println!(
            "verified: the log of size {} (root {}) is a prefix of the log of size {} (root {})",
            old.tree_size,
            hex::encode(old_root),
            new.tree_size,
            hex::encode(new_root)
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "TAMPERED: no valid consistency proof from size {} to size {}: the log was rewritten",
            old.tree_size, new.tree_size
        );
        Ok(ExitCode::from(1))
    }
}
