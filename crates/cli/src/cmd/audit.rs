//! `truc audit`: checks of the audit log, offline (`verify`, with the heads
//! nodes witnessed), of a node's witnessed head (`head`), and against a
//! running hub (`prove`, `consistency`). Exit codes: 0 verified, 1 tampered
//! (or a proof that does not verify), 2 bad input, 3 could not check.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

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
    /// Repeat it for each hub replica of a deployment: each log is checked
    /// with its own key, then the deployment's total is printed.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// The hub's audit public key (hex), to check signatures; repeat it
    /// once per `--data`, in the same order. By default, for a data
    /// directory `D`, `pki/replica-D/audit-signing.pub` beside it (a further
    /// replica of `truc demo --hubs N`), else `pki/audit-signing.pub`, if
    /// present.
    #[arg(long = "public-key")]
    public_keys: Vec<PathBuf>,
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

/// The key of the log in `data` when none is given: that of the replica
/// the directory is named after, else the hub's, beside it (or, for a
/// node's directory, one level up).
fn guess_key(data: &std::path::Path) -> Option<PathBuf> {
    let parent = data.parent()?;
    let replica = data.file_name().map(|name| {
        parent
            .join("pki")
            .join(format!("replica-{}", name.to_string_lossy()))
    });
    let candidates = [
        replica.map(|d| d.join("audit-signing.pub")),
        Some(parent.join("pki/audit-signing.pub")),
        parent.parent().map(|p| p.join("pki/audit-signing.pub")),
    ];
    candidates.into_iter().flatten().find(|p| p.exists())
}

fn verify(args: VerifyArgs) -> Result<ExitCode, CliError> {
    let keys: Vec<Option<PathBuf>> = match args.public_keys.len() {
        0 => args.data.iter().map(|d| guess_key(d)).collect(),
        n if n == args.data.len() => args.public_keys.iter().cloned().map(Some).collect(),
        n => {
            return Err(CliError::Usage(format!(
                "{n} --public-key for {} --data: give one per --data, in the same order, or none",
                args.data.len()
            )));
        }
    };
    // Every directory is checked before any log is read.
    for (i, dir) in args.data.iter().enumerate() {
        if !dir.join("db").exists() {
            return Err(CliError::CannotCheck(format!(
                "{} holds no truc database",
                dir.display()
            )));
        }
        if args.data[..i].contains(dir) {
            return Err(CliError::Usage(format!(
                "--data {} given twice: it would be counted twice",
                dir.display()
            )));
        }
    }
    if let [data] = args.data.as_slice() {
        return Ok(verify_log(data, keys[0].as_deref(), &args.witnesses)?.exit_code());
    }
    let mut total = BTreeMap::new();
    let mut tampered = Vec::new();
    for (data, key) in args.data.iter().zip(&keys) {
        let name = replica_name(data);
        println!("== replica {name} ({})", data.display());
        let verdict =
            verify_log(data, key.as_deref(), &args.witnesses).map_err(|e| e.in_replica(&name))?;
        if verdict.tampered {
            tampered.push(name);
        } else {
            for (k, n) in verdict.counts {
                *total.entry(k).or_insert(0) += n;
            }
        }
        println!();
    }
    let n = args.data.len();
    if !tampered.is_empty() {
        println!(
            "TAMPERED: the log of replica {} does not verify ({} of {n} replicas did)",
            tampered.join(", replica "),
            n - tampered.len()
        );
        return Ok(ExitCode::from(1));
    }
    println!("== deployment: {n} hub replicas, each log verified with its own key");
    table::print(&table::from_counts(&total));
    Ok(ExitCode::SUCCESS)
}

/// How a replica is named in the output: its data directory's name.
fn replica_name(data: &std::path::Path) -> String {
    data.file_name().map_or_else(
        || data.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// What checking one log found.
struct Verdict {
    tampered: bool,
    /// The counters recomputed from its records.
    counts: BTreeMap<truc_audit::CountKey, u64>,
}

impl Verdict {
    fn exit_code(&self) -> ExitCode {
        ExitCode::from(u8::from(self.tampered))
    }
}

/// Checks the log in `data` (with `key_path`, and against `witnesses`),
/// printing what it finds.
fn verify_log(
    data: &std::path::Path,
    key_path: Option<&std::path::Path>,
    witnesses: &[PathBuf],
) -> Result<Verdict, CliError> {
    let public_key = key_path.map(key).transpose()?;
    let store = Store::open(data).map_err(|e| CliError::CannotCheck(e.to_string()))?;
    let report = truc_audit::verify(&store, public_key.as_deref())
        .map_err(|e| CliError::CannotCheck(e.to_string()))?;
    table::print(&table::from_counts(&report.counts));
    let tampered = Verdict {
        tampered: true,
        counts: BTreeMap::new(),
    };
    if let Some(problem) = &report.problem {
        println!("TAMPERED: {problem}");
        if report.unreadable.len() > 1 {
            println!(
                "{} stored entries do not decode (skipped; everything else was checked)",
                report.unreadable.len()
            );
        }
        println!("{} records verified before it", report.records);
        return Ok(tampered);
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
        return Ok(tampered);
    }
    if !check_witnesses(&store, witnesses, public_key.as_deref())? {
        return Ok(tampered);
    }
    println!(
        "verified: {} records, Merkle root {}, {} signed tree heads, {} hub receipts, counters equal the records",
        report.records,
        hex::encode(report.root),
        report.tree_heads,
        report.receipts
    );
    match key_path {
        Some(path) => println!("signatures checked with {}", path.display()),
        None if report.tree_heads == 0 => {}
        None => {
            return Err(CliError::CannotCheck(
                "tree head and receipt signatures not checked: give --public-key".into(),
            ));
        }
    }
    Ok(Verdict {
        tampered: false,
        counts: report.counts,
    })
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
