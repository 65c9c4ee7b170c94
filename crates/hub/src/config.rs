//! The hub's config file.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use truc_ops::config::{ConfigError, Limits, TlsSection, load_toml, resolve, socket_addr};
use truc_pki::TlsFiles;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: String,
    ops_listen: String,
    data_dir: PathBuf,
    registry: PathBuf,
    audit_key: PathBuf,
    tls: TlsSection,
    #[serde(default)]
    limits: Limits,
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
    /// The hub's certificate, key and CA.
    pub tls: TlsFiles,
    /// Limits.
    pub limits: Limits,
}

impl HubConfig {
    /// Loads and validates `path`.
    pub fn load(path: &Path) -> Result<HubConfig, ConfigError> {
        let raw: Raw = load_toml(path)?;
        let limits = raw.limits;
        limits.validate(path)?;
        Ok(HubConfig {
            listen: socket_addr(path, "listen", &raw.listen)?,
            ops_listen: socket_addr(path, "ops_listen", &raw.ops_listen)?,
            data_dir: resolve(path, "data_dir", &raw.data_dir, false)?,
            registry: resolve(path, "registry", &raw.registry, true)?,
            audit_key: resolve(path, "audit_key", &raw.audit_key, true)?,
            tls: raw.tls.resolve(path)?,
            limits,
        })
    }
}
