//! The hub's config file.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use truc_ops::config::{
    ConfigError, Limits, TlsSection, TracingSection, check_version, config_version, load_toml,
    resolve, socket_addr,
};
use truc_pki::TlsFiles;

/// The hub's config file as written (`hub.toml`), before validation: the
/// demo and `deploy/hub.toml` are this struct serialized, so a new key is a
/// new field here (with its doc comment) and in [`HubConfig`].
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HubFile {
    /// The config format's version (1; absent means 1).
    #[serde(default = "config_version")]
    pub version: u32,
    /// gRPC listen address (`ip:port`): mutual TLS 1.3, for nodes and operators.
    pub listen: String,
    /// Ops HTTP listen address: /metrics, /healthz, the dashboard (keep it internal).
    pub ops_listen: String,
    /// Where the hub keeps its audit log and counters (sled).
    pub data_dir: PathBuf,
    /// The registry file.
    pub registry: PathBuf,
    /// The Ed25519 key (PKCS#8 PEM) that signs the audit log's tree heads.
    /// Give this or `audit_key_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_key: Option<PathBuf>,
    /// A directory holding one signing key per hub replica, `<replica>.key`:
    /// the key used is the one of the replica name given at start
    /// (`truc hub --replica NAME` or `TRUC_REPLICA`), so replicas sharing
    /// this file (a Kubernetes StatefulSet's pods) each sign their own log.
    /// Give this or `audit_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_key_dir: Option<PathBuf>,
    /// The zone statistics' days are cut in: an IANA name or a fixed offset
    /// like +07:00 (default Asia/Ho_Chi_Minh).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// The origin line of the log's checkpoints (C2SP tlog-checkpoint): a
    /// name without spaces or `+`, e.g. `hub.example.gov.vn/audit`. By
    /// default `<hub name>/truc-audit`, the hub name taken from its
    /// certificate. Changing it makes witnesses refuse the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_origin: Option<String>,
    /// The hub's certificate, key and CA.
    pub tls: TlsSection,
    /// Limits on calls and connections.
    #[serde(default)]
    pub limits: Limits,
    /// Limits on the documents the hub relays.
    #[serde(default)]
    pub documents: truc_doc::Limits,
    /// Dashboard access.
    #[serde(default)]
    pub dashboard: Dashboard,
    /// `[[peer]]`: the other replicas of this hub, whose statistics the
    /// dashboard fetches (over mutual TLS, with this hub's certificate) and
    /// shows beside its own, merged into the deployment's totals. A peer
    /// named like this replica (`--replica`) is skipped, so every replica
    /// may read the same list.
    #[serde(default, rename = "peer", skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    /// A file holding the key (hex, at least 32 bytes) under which the hub
    /// records end users as HMAC-SHA256 where the registry says
    /// `hash_end_user = true`. Needed when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user_key: Option<PathBuf>,
    /// Where spans are exported (`[tracing]`; off when absent).
    #[serde(default, skip_serializing_if = "TracingSection::is_default")]
    pub tracing: TracingSection,
    /// The most transaction ids the hub keeps in its in-memory filter of
    /// recorded ids (about 1.2 bytes each; default 268435456, about
    /// 300 MiB, some 90 days at 2.7 million a day). A new call's id is
    /// answered from the filter instead of the log's index; past this many
    /// ids since the hub started, more are looked up in the index. 0: no
    /// filter, every id is looked up. At most 4294967296.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_filter_ids: Option<u64>,
}

/// The largest `id_filter_ids`: about 5 GiB of filter.
const MOST_ID_FILTER_IDS: u64 = 1 << 32;

fn default_time_zone() -> String {
    "Asia/Ho_Chi_Minh".into()
}

/// `[dashboard]`: who may see the web dashboard on the ops port.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dashboard {
    /// Serve the dashboard even when the ops port is not on loopback (put
    /// it behind an authenticating proxy then). Off by default.
    pub public: bool,
}

/// `[[peer]]`: another replica of this hub.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The replica's name (a DNS label such as `hub-1`), shown on the
    /// dashboard.
    pub name: String,
    /// Its gRPC address, `host:port`; its certificate must name the same
    /// hub as this one's.
    pub address: String,
}

/// A validated hub config, paths resolved against the file's directory.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Ops HTTP listen address.
    pub ops_listen: SocketAddr,
    /// Where the hub keeps its audit log and counters.
    pub data_dir: PathBuf,
    /// The registry file.
    pub registry: PathBuf,
    /// The Ed25519 key (PKCS#8 PEM) that signs the audit log's tree heads.
    pub audit_key: PathBuf,
    /// This replica's name, when one was given at start: it picks the key
    /// in `audit_key_dir` and ends the log's origin.
    pub replica: Option<String>,
    /// The time zone days are cut in.
    pub time_zone: truc_audit::Zone,
    /// The origin of the log's checkpoints, if configured (see
    /// [`HubConfig::log_origin`]).
    pub log_origin: Option<String>,
    /// Dashboard access.
    pub dashboard: Dashboard,
    /// The other replicas (this one left out), checked.
    pub peers: Vec<Peer>,
    /// Limits on relayed documents.
    pub documents: truc_doc::Limits,
    /// The hub's certificate, key and CA.
    pub tls: TlsFiles,
    /// Limits.
    pub limits: Limits,
    /// The end-user hashing key's file.
    pub end_user_key: Option<PathBuf>,
    /// Where spans are exported.
    pub tracing: TracingSection,
    /// The most ids in the filter of recorded transaction ids (0: none).
    pub id_filter_ids: usize,
}

impl HubConfig {
    /// Loads and validates `path`, for a hub without a replica name.
    pub fn load(path: &Path) -> Result<HubConfig, ConfigError> {
        HubConfig::load_replica(path, None)
    }

    /// Loads and validates `path` for the replica named `replica` (a DNS
    /// label such as a StatefulSet pod's name `hub-0`), if any: the name
    /// picks `<audit_key_dir>/<replica>.key` and is appended to the log's
    /// origin, so each replica's log has its own key and name.
    pub fn load_replica(path: &Path, replica: Option<&str>) -> Result<HubConfig, ConfigError> {
        let raw: HubFile = load_toml(path)?;
        check_version(path, raw.version)?;
        let limits = raw.limits;
        limits.validate(path)?;
        if let Some(name) = replica
            && !truc_pki::valid_name(name)
        {
            return Err(ConfigError::new(
                path,
                "replica",
                format!(
                    "{name:?}: a replica name is a DNS label (1 to 63 of a-z, 0-9 and `-`, not starting or ending with `-`), like hub-0"
                ),
            ));
        }
        // Checked in the file's order: the addresses and paths before the key.
        let listen = socket_addr(path, "listen", &raw.listen)?;
        let ops_listen = socket_addr(path, "ops_listen", &raw.ops_listen)?;
        let data_dir = resolve(path, "data_dir", &raw.data_dir, false)?;
        let registry = resolve(path, "registry", &raw.registry, true)?;
        let audit_key = match (&raw.audit_key, &raw.audit_key_dir, replica) {
            (Some(key), None, _) => resolve(path, "audit_key", key, true)?,
            (None, Some(dir), Some(name)) => {
                let dir = resolve(path, "audit_key_dir", dir, true)?;
                let key = dir.join(format!("{name}.key"));
                if !key.exists() {
                    return Err(ConfigError::new(
                        path,
                        "audit_key_dir",
                        format!(
                            "{} does not exist: no key for replica {name}",
                            key.display()
                        ),
                    ));
                }
                key
            }
            (None, Some(_), None) => {
                return Err(ConfigError::new(
                    path,
                    "audit_key_dir",
                    "the key in audit_key_dir is chosen by the replica's name: give `truc hub --replica NAME` or set TRUC_REPLICA",
                ));
            }
            (Some(_), Some(_), _) => {
                return Err(ConfigError::new(
                    path,
                    "audit_key_dir",
                    "give audit_key or audit_key_dir, not both",
                ));
            }
            (None, None, _) => {
                return Err(ConfigError::new(
                    path,
                    "audit_key",
                    "missing: the audit signing key (or audit_key_dir with one key per replica)",
                ));
            }
        };
        raw.tracing.validate(path)?;
        let peers = peers(path, &raw.peers, replica)?;
        let id_filter_ids = match raw.id_filter_ids {
            None => truc_audit::DEFAULT_ID_FILTER_IDS,
            Some(n) if n <= MOST_ID_FILTER_IDS => usize::try_from(n).map_err(|_| {
                ConfigError::new(path, "id_filter_ids", "too large for this machine")
            })?,
            Some(n) => {
                return Err(ConfigError::new(
                    path,
                    "id_filter_ids",
                    format!(
                        "{n}: at most {MOST_ID_FILTER_IDS} (about 5 GiB of memory); 0 turns the filter off"
                    ),
                ));
            }
        };
        Ok(HubConfig {
            id_filter_ids,
            peers,
            replica: replica.map(str::to_string),
            listen,
            ops_listen,
            data_dir,
            registry,
            audit_key,
            time_zone: truc_audit::Zone::parse(&raw.time_zone).ok_or_else(|| {
                ConfigError::new(
                    path,
                    "time_zone",
                    format!(
                        "{:?}: expected an IANA zone name like Asia/Ho_Chi_Minh or Europe/Paris, or a fixed offset like +07:00",
                        raw.time_zone
                    ),
                )
            })?,
            log_origin: match raw.log_origin {
                Some(o)
                    if !truc_audit::sth::valid_origin(&o)
                        || replica.is_some_and(|r| {
                            !truc_audit::sth::valid_origin(&format!("{o}/{r}"))
                        }) =>
                {
                    return Err(ConfigError::new(
                        path,
                        "log_origin",
                        format!("{o:?}: a name without spaces, `+` or control characters, at most 255 bytes"),
                    ));
                }
                o => o,
            },
            dashboard: raw.dashboard,
            documents: raw
                .documents
                .checked()
                .map_err(|e| ConfigError::new(path, "documents", e.to_string()))?,
            tls: raw.tls.resolve(path)?,
            limits,
            end_user_key: match &raw.end_user_key {
                None => None,
                Some(k) => {
                    let key = resolve(path, "end_user_key", k, true)?;
                    // Read now, so a bad key is a config error (exit 2).
                    crate::end_user::EndUserKey::load(&key)
                        .map_err(|e| ConfigError::new(path, "end_user_key", e))?;
                    Some(key)
                }
            },
            tracing: raw.tracing,
        })
    }
}

impl HubConfig {
    /// The options the hub's audit log opens with: `base` (how it commits,
    /// from the caller) with what this config sets, its time zone and the
    /// size of its filter of transaction ids.
    pub fn audit_options(&self, base: truc_audit::Options) -> truc_audit::Options {
        truc_audit::Options {
            time_zone: self.time_zone.clone(),
            id_filter_ids: self.id_filter_ids,
            ..base
        }
    }

    /// The origin of the log's checkpoints: `log_origin`, or
    /// `<hub name>/truc-audit` with the name from the hub's certificate;
    /// then, for a named replica, `/<replica>` (`hub/truc-audit/hub-0`).
    pub fn log_origin(&self) -> String {
        let base = match &self.log_origin {
            Some(o) => o.clone(),
            None => std::fs::read(&self.tls.cert)
                .ok()
                .and_then(|pem| truc_pki::Identity::from_cert_pem(&pem).ok())
                .map(|id| format!("{}/truc-audit", id.name))
                .filter(|o| truc_audit::sth::valid_origin(o))
                .unwrap_or_else(|| truc_audit::sth::DEFAULT_ORIGIN.to_string()),
        };
        match &self.replica {
            // A configured origin of 255 bytes plus a replica name would be
            // too long: the checked form is kept then.
            Some(r) if truc_audit::sth::valid_origin(&format!("{base}/{r}")) => {
                format!("{base}/{r}")
            }
            _ => base,
        }
    }
}

/// The peers of `listed` other than `replica`, each name a DNS label and
/// address `host:port`, neither given twice.
fn peers(path: &Path, listed: &[Peer], replica: Option<&str>) -> Result<Vec<Peer>, ConfigError> {
    for (i, p) in listed.iter().enumerate() {
        let field = |f: &str| format!("peer[{i}].{f}");
        if !truc_pki::valid_name(&p.name) {
            return Err(ConfigError::new(
                path,
                &field("name"),
                format!(
                    "{:?}: a replica name is a DNS label (1 to 63 of a-z, 0-9 and `-`), like hub-1",
                    p.name
                ),
            ));
        }
        truc_ops::config::host_port(path, &field("address"), &p.address)?;
        for (what, same) in [
            ("name", listed[..i].iter().any(|q| q.name == p.name)),
            (
                "address",
                listed[..i].iter().any(|q| q.address == p.address),
            ),
        ] {
            if same {
                return Err(ConfigError::new(
                    path,
                    &field(what),
                    "listed twice: the replica would be counted twice",
                ));
            }
        }
    }
    Ok(listed
        .iter()
        .filter(|p| Some(p.name.as_str()) != replica)
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with_zone(zone: &str) -> Result<HubConfig, ConfigError> {
        load_with("", zone)
    }

    fn load_with(head: &str, zone: &str) -> Result<HubConfig, ConfigError> {
        load_full(head, zone, "", None)
    }

    fn load_full(
        head: &str,
        zone: &str,
        tail: &str,
        replica: Option<&str>,
    ) -> Result<HubConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("dir");
        for f in ["registry.toml", "audit.key", "ca.crt", "hub.crt", "hub.key"] {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            format!(
                "{head}listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
                 registry = \"registry.toml\"\naudit_key = \"audit.key\"\ntime_zone = \"{zone}\"\n\
                 [tls]\nca = \"ca.crt\"\ncert = \"hub.crt\"\nkey = \"hub.key\"\n{tail}"
            ),
        )
        .expect("write");
        HubConfig::load_replica(&path, replica)
    }

    #[test]
    fn peers_are_checked_and_this_replica_is_left_out() {
        let peer = |name: &str, address: &str| {
            format!("[[peer]]\nname = \"{name}\"\naddress = \"{address}\"\n")
        };
        let list = [
            peer("hub-0", "hub-0.hub:7000"),
            peer("hub-1", "hub-1.hub:7000"),
        ]
        .concat();
        let c = load_full("", "UTC", &list, Some("hub-0")).expect("valid");
        assert_eq!(
            c.peers,
            vec![Peer {
                name: "hub-1".into(),
                address: "hub-1.hub:7000".into()
            }]
        );
        assert_eq!(
            load_full("", "UTC", &list, None)
                .expect("valid")
                .peers
                .len(),
            2
        );
        for (tail, field) in [
            (peer("Hub 1", "hub-1:7000"), "peer[0].name"),
            (peer("hub-1", "hub-1"), "peer[0].address"),
            (
                [peer("a", "a:1"), peer("a", "b:1")].concat(),
                "peer[1].name",
            ),
            (
                [peer("a", "a:1"), peer("b", "a:1")].concat(),
                "peer[1].address",
            ),
            ("[[peer]]\nname = \"a\"\n".to_string(), "address"),
        ] {
            let err = load_full("", "UTC", &tail, None).expect_err(&tail);
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn the_filter_of_ids_is_sized_by_id_filter_ids() {
        let default = load_with("", "UTC").expect("valid");
        assert_eq!(default.id_filter_ids, truc_audit::DEFAULT_ID_FILTER_IDS);
        for (given, want) in [(0u64, 0usize), (5_000_000, 5_000_000), (1 << 32, 1 << 32)] {
            let c = load_with(&format!("id_filter_ids = {given}\n"), "UTC").expect("valid");
            assert_eq!(c.id_filter_ids, want);
        }
        // What the config says is what the hub's log opens with; the rest
        // of the options stay the caller's.
        let base = truc_audit::Options {
            durable: false,
            ..Default::default()
        };
        for given in [0u64, 5_000_000] {
            let c = load_with(&format!("id_filter_ids = {given}\n"), "Asia/Ho_Chi_Minh")
                .expect("valid");
            let options = c.audit_options(base.clone());
            assert_eq!(options.id_filter_ids as u64, given);
            assert_eq!(options.time_zone.name(), "Asia/Ho_Chi_Minh");
            assert!(!options.durable);
        }
        let err = load_with("id_filter_ids = 4294967297\n", "UTC").unwrap_err();
        assert!(err.to_string().contains("id_filter_ids"), "{err}");
        // Not a count at all: refused where the file says it.
        for bad in ["-1", "\"many\"", "1.5"] {
            let err = load_with(&format!("id_filter_ids = {bad}\n"), "UTC").unwrap_err();
            assert!(err.to_string().contains("line 1"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_log_origin_is_a_key_name() {
        let named = load_with("log_origin = \"hub.example/audit\"\n", "UTC").expect("valid");
        assert_eq!(named.log_origin(), "hub.example/audit");
        // Without one, and without a readable certificate: the default.
        let unnamed = load_with("", "UTC").expect("valid");
        assert_eq!(unnamed.log_origin(), truc_audit::sth::DEFAULT_ORIGIN);
        for bad in ["a b", "a+b", ""] {
            let err = load_with(&format!("log_origin = \"{bad}\"\n"), "UTC").unwrap_err();
            assert!(err.to_string().contains("log_origin"), "{err}");
        }
    }

    /// A hub config with `audit_key_dir = "keys"` holding `hub-0.key`.
    fn replica_config(dir: &Path, head: &str) -> PathBuf {
        for f in ["registry.toml", "ca.crt", "hub.crt", "hub.key"] {
            std::fs::write(dir.join(f), "").expect("write");
        }
        std::fs::create_dir(dir.join("keys")).expect("keys");
        std::fs::write(dir.join("keys/hub-0.key"), "").expect("write");
        let path = dir.join("hub.toml");
        std::fs::write(
            &path,
            format!(
                "{head}listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
                 registry = \"registry.toml\"\n\
                 [tls]\nca = \"ca.crt\"\ncert = \"hub.crt\"\nkey = \"hub.key\"\n"
            ),
        )
        .expect("write");
        path
    }

    #[test]
    fn a_replica_name_picks_its_key_and_names_its_log() {
        let dir = tempfile::tempdir().expect("dir");
        let path = replica_config(dir.path(), "audit_key_dir = \"keys\"\n");
        let hub0 = HubConfig::load_replica(&path, Some("hub-0")).expect("hub-0 has a key");
        assert_eq!(hub0.audit_key, dir.path().join("keys/hub-0.key"));
        assert_eq!(hub0.replica.as_deref(), Some("hub-0"));
        // No certificate to read: the default origin, then the replica.
        assert_eq!(
            hub0.log_origin(),
            format!("{}/hub-0", truc_audit::sth::DEFAULT_ORIGIN)
        );
        let err = HubConfig::load_replica(&path, Some("hub-1")).expect_err("no key for hub-1");
        assert_eq!(err.field, "audit_key_dir", "{err}");
        assert!(err.to_string().contains("hub-1.key"), "{err}");
        let err = HubConfig::load(&path).expect_err("a key directory needs a replica name");
        assert_eq!(err.field, "audit_key_dir", "{err}");
        assert!(err.to_string().contains("TRUC_REPLICA"), "{err}");
        // A name that would leave the directory, or is no DNS label.
        for bad in [
            "../hub-0",
            "hub/0",
            "Hub-0",
            "-hub",
            "hub-",
            "",
            "hub 0",
            &"a".repeat(64),
        ] {
            let err = HubConfig::load_replica(&path, Some(bad)).expect_err(bad);
            assert_eq!(err.field, "replica", "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_replica_name_is_appended_to_a_configured_origin() {
        let dir = tempfile::tempdir().expect("dir");
        let path = replica_config(
            dir.path(),
            "log_origin = \"hub.example/audit\"\naudit_key_dir = \"keys\"\n",
        );
        let hub0 = HubConfig::load_replica(&path, Some("hub-0")).expect("valid");
        assert_eq!(hub0.log_origin(), "hub.example/audit/hub-0");
        // Too long once the name is appended: refused at load, not cut.
        let dir = tempfile::tempdir().expect("dir");
        let long = "o".repeat(250);
        let path = replica_config(
            dir.path(),
            &format!("log_origin = \"{long}\"\naudit_key_dir = \"keys\"\n"),
        );
        HubConfig::load(&path).expect_err("needs a replica name, but the origin alone is fine");
        let err = HubConfig::load_replica(&path, Some("hub-0")).expect_err("too long");
        assert_eq!(err.field, "log_origin", "{err}");
    }

    #[test]
    fn one_audit_key_setting_exactly() {
        let dir = tempfile::tempdir().expect("dir");
        let path = replica_config(dir.path(), "");
        let err = HubConfig::load_replica(&path, Some("hub-0")).expect_err("neither");
        assert_eq!(err.field, "audit_key", "{err}");
        let dir = tempfile::tempdir().expect("dir");
        let path = replica_config(
            dir.path(),
            "audit_key = \"keys/hub-0.key\"\naudit_key_dir = \"keys\"\n",
        );
        let err = HubConfig::load_replica(&path, Some("hub-0")).expect_err("both");
        assert_eq!(err.field, "audit_key_dir", "{err}");
        // One key and a replica name: the key, the name in the origin.
        let dir = tempfile::tempdir().expect("dir");
        let path = replica_config(dir.path(), "audit_key = \"keys/hub-0.key\"\n");
        let named = HubConfig::load_replica(&path, Some("hub-7")).expect("valid");
        assert_eq!(named.audit_key, dir.path().join("keys/hub-0.key"));
        assert!(
            named.log_origin().ends_with("/hub-7"),
            "{}",
            named.log_origin()
        );
    }

    #[test]
    fn time_zones_are_iana_names_or_fixed_offsets() {
        let paris = load_with_zone("Europe/Paris").expect("a zone with daylight saving");
        assert_eq!(paris.time_zone.name(), "Europe/Paris");
        let fixed = load_with_zone("+05:30").expect("a fixed offset");
        assert_eq!(fixed.time_zone.label(), "+05:30");
        let err = load_with_zone("Mars/Olympus").expect_err("refused");
        assert!(err.to_string().contains("time_zone"), "{err}");
    }

    #[test]
    fn an_end_user_key_is_long_hex() {
        let dir = tempfile::tempdir().expect("dir");
        for f in ["registry.toml", "audit.key", "ca.crt", "hub.crt", "hub.key"] {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
        let path = dir.path().join("hub.toml");
        let config = "end_user_key = \"user.key\"\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n\
                      data_dir = \"data\"\nregistry = \"registry.toml\"\naudit_key = \"audit.key\"\n\
                      [tls]\nca = \"ca.crt\"\ncert = \"hub.crt\"\nkey = \"hub.key\"\n";
        std::fs::write(&path, config).expect("write");
        let err = HubConfig::load(&path).expect_err("no key file");
        assert_eq!(err.field, "end_user_key", "{err}");
        std::fs::write(dir.path().join("user.key"), "not hex").expect("write");
        let err = HubConfig::load(&path).expect_err("not hex");
        assert_eq!(err.field, "end_user_key", "{err}");
        std::fs::write(
            dir.path().join("user.key"),
            format!("{}\n", "0f".repeat(32)),
        )
        .expect("write");
        let ok = HubConfig::load(&path).expect("a key");
        assert_eq!(ok.end_user_key, Some(dir.path().join("user.key")));
    }

    #[test]
    fn version_is_one_or_absent() {
        load_with("", "+07:00").expect("no version: a file from before the key is version 1");
        load_with("version = 1\n", "+07:00").expect("version 1");
        let err = load_with("version = 2\n", "+07:00").expect_err("unknown version");
        assert_eq!(err.field, "version", "{err}");
        assert!(err.file.ends_with("hub.toml"), "{err}");
        assert!(err.to_string().contains("version 2"), "{err}");
    }
}
