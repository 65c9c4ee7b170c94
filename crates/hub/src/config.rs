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
    pub audit_key: PathBuf,
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
    /// A file holding the key (hex, at least 32 bytes) under which the hub
    /// records end users as HMAC-SHA256 where the registry says
    /// `hash_end_user = true`. Needed when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user_key: Option<PathBuf>,
    /// Where spans are exported (`[tracing]`; off when absent).
    #[serde(default, skip_serializing_if = "TracingSection::is_default")]
    pub tracing: TracingSection,
}

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
    /// The time zone days are cut in.
    pub time_zone: truc_audit::Zone,
    /// The origin of the log's checkpoints, if configured (see
    /// [`HubConfig::log_origin`]).
    pub log_origin: Option<String>,
    /// Dashboard access.
    pub dashboard: Dashboard,
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
}

impl HubConfig {
    /// Loads and validates `path`.
    pub fn load(path: &Path) -> Result<HubConfig, ConfigError> {
        let raw: HubFile = load_toml(path)?;
        check_version(path, raw.version)?;
        let limits = raw.limits;
        limits.validate(path)?;
        raw.tracing.validate(path)?;
        Ok(HubConfig {
            listen: socket_addr(path, "listen", &raw.listen)?,
            ops_listen: socket_addr(path, "ops_listen", &raw.ops_listen)?,
            data_dir: resolve(path, "data_dir", &raw.data_dir, false)?,
            registry: resolve(path, "registry", &raw.registry, true)?,
            audit_key: resolve(path, "audit_key", &raw.audit_key, true)?,
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
                Some(o) if !truc_audit::sth::valid_origin(&o) => {
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
    /// The origin of the log's checkpoints: `log_origin`, or
    /// `<hub name>/truc-audit` with the name from the hub's certificate.
    pub fn log_origin(&self) -> String {
        if let Some(o) = &self.log_origin {
            return o.clone();
        }
        std::fs::read(&self.tls.cert)
            .ok()
            .and_then(|pem| truc_pki::Identity::from_cert_pem(&pem).ok())
            .map(|id| format!("{}/truc-audit", id.name))
            .filter(|o| truc_audit::sth::valid_origin(o))
            .unwrap_or_else(|| truc_audit::sth::DEFAULT_ORIGIN.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with_zone(zone: &str) -> Result<HubConfig, ConfigError> {
        load_with("", zone)
    }

    fn load_with(head: &str, zone: &str) -> Result<HubConfig, ConfigError> {
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
                 [tls]\nca = \"ca.crt\"\ncert = \"hub.crt\"\nkey = \"hub.key\"\n"
            ),
        )
        .expect("write");
        HubConfig::load(&path)
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
