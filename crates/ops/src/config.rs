//! Loading a server's TOML config: every error names the file, and the line
//! and field where it can.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use truc_pki::TlsFiles;

/// A config that cannot be used. Processes exit with code 2 on it.
#[derive(Debug, thiserror::Error)]
#[error("config {file}{}: {field}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// The field at fault (`listen`, `tls.cert`, …).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `field` of `file`.
    pub fn new(file: &Path, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Reads and parses `path`.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "(file)", format!("cannot read: {e}")))?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let message = e.message().to_string();
        // toml names the missing or unknown field in its message.
        let field = field_in(&message).unwrap_or_else(|| "(syntax)".to_string());
        ConfigError {
            file: path.to_path_buf(),
            line,
            field,
            message,
        }
    })
}

fn field_in(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// `addr` as a socket address, or an error naming `field`.
pub fn socket_addr(file: &Path, field: &str, addr: &str) -> Result<SocketAddr, ConfigError> {
    addr.parse().map_err(|_| {
        ConfigError::new(
            file,
            field,
            format!("{addr:?} is not an ip:port address, e.g. 127.0.0.1:7000"),
        )
    })
}

/// Checks that `addr` is `host:port` (a name or an IP, and a port above 0),
/// or an error naming `field`.
pub fn host_port(file: &Path, field: &str, addr: &str) -> Result<(), ConfigError> {
    let ok = match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            file,
            field,
            format!("{addr:?} is not a host:port address, e.g. hub-0.hub:7000"),
        ))
    }
}

/// `path` resolved against the directory of the config `file`; the file must
/// exist when `must_exist`.
pub fn resolve(
    file: &Path,
    field: &str,
    path: &Path,
    must_exist: bool,
) -> Result<PathBuf, ConfigError> {
    let base = file.parent().unwrap_or(Path::new("."));
    let resolved = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    if must_exist && !resolved.exists() {
        return Err(ConfigError::new(
            file,
            field,
            format!("{} does not exist", resolved.display()),
        ));
    }
    Ok(resolved)
}

/// The version of the config files this build reads and writes.
pub const CONFIG_VERSION: u32 = 1;

/// The `version` of a file that has none: files written before the key
/// existed are version 1.
pub fn config_version() -> u32 {
    CONFIG_VERSION
}

/// Refuses a config `version` this build does not know.
pub fn check_version(file: &Path, version: u32) -> Result<(), ConfigError> {
    if version == CONFIG_VERSION {
        Ok(())
    } else {
        Err(ConfigError::new(
            file,
            "version",
            format!(
                "version {version} is not known by this build, which reads version {CONFIG_VERSION}"
            ),
        ))
    }
}

/// The `[tls]` section of a config: paths relative to the config file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The CA certificate (PEM) peers are checked against.
    pub ca: PathBuf,
    /// This side's certificate (PEM).
    pub cert: PathBuf,
    /// This side's private key (PEM).
    pub key: PathBuf,
    /// Certificate revocation lists (PEM or DER) peers' certificates are
    /// checked against at every handshake; reloaded when they change.
    /// `truc pki init` writes the CA's, `pki/ca.crl`. Empty: no check.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// A list past its nextUpdate: `warn` (default) keeps accepting and
    /// reports it (metrics, `/healthz`); `refuse` refuses every certificate
    /// of its issuer.
    #[serde(default)]
    pub crl_policy: CrlPolicySetting,
}

/// `tls.crl_policy` as written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CrlPolicySetting {
    /// Keep accepting; report the stale list.
    #[default]
    Warn,
    /// Refuse certificates of the stale list's issuer.
    Refuse,
}

impl TlsSection {
    /// The files, resolved against the config `file`'s directory; each must exist.
    pub fn resolve(&self, file: &Path) -> Result<TlsFiles, ConfigError> {
        let mut files = TlsFiles::new(
            resolve(file, "tls.ca", &self.ca, true)?,
            resolve(file, "tls.cert", &self.cert, true)?,
            resolve(file, "tls.key", &self.key, true)?,
        );
        for (i, crl) in self.crls.iter().enumerate() {
            files
                .crls
                .push(resolve(file, &format!("tls.crls[{i}]"), crl, true)?);
        }
        files.crl_policy = match self.crl_policy {
            CrlPolicySetting::Warn => truc_pki::CrlPolicy::Warn,
            CrlPolicySetting::Refuse => truc_pki::CrlPolicy::Refuse,
        };
        Ok(files)
    }
}

/// The longest drain deadline a config may set (an hour).
pub const MAX_DRAIN_DEADLINE_SECS: u64 = 3600;

/// Limits on what callers may send.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest payload of a data call, in bytes (default 4 MiB).
    pub max_payload_bytes: usize,
    /// Longest a routed call may take when its caller sets no deadline, in
    /// milliseconds (default 30 s).
    pub call_timeout_ms: u64,
    /// Longest a document relay (envelope and every attachment byte) may
    /// take through the hub, in milliseconds (default 10 min: 200 MiB at
    /// 0.35 MB/s).
    pub relay_timeout_ms: u64,

    // What one gRPC listener holds at most (see `GrpcServer`).
    /// Established connections at once (default 1024); more are closed on accept.
    pub max_connections: usize,
    /// TLS handshakes in flight at once (default 64); a new connection takes
    /// the place of the oldest one still handshaking.
    pub max_handshakes: usize,
    /// Longest a TLS handshake may take, in milliseconds (default 10 s).
    pub handshake_timeout_ms: u64,
    /// A connection from which nothing is read for this long is closed, in
    /// milliseconds (default 120 s; the server pings every
    /// `keepalive_interval_ms`, so only a silent peer is cut).
    pub idle_timeout_ms: u64,
    /// Concurrent streams (calls) per connection (default 1024).
    pub max_streams_per_connection: u32,
    /// Longest a request handler may run before it answers, in milliseconds
    /// (default 1 h: it covers a whole document upload, not the answer
    /// streams); past it the call gets DEADLINE_EXCEEDED.
    pub request_timeout_ms: u64,
    /// HTTP/2 keepalive ping interval, in milliseconds (default 30 s).
    pub keepalive_interval_ms: u64,
    /// How long a keepalive ping may go unanswered before the connection is
    /// closed, in milliseconds (default 10 s).
    pub keepalive_timeout_ms: u64,
    /// How long a drain (SIGTERM, `truc hub drain` naming no deadline) lets
    /// the calls in flight finish, in seconds (default 10, 1 to 3600). Keep
    /// the service manager's stop timeout (systemd `TimeoutStopSec`,
    /// Kubernetes `terminationGracePeriodSeconds`) above it.
    pub drain_deadline_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 4 * 1024 * 1024,
            call_timeout_ms: 30_000,
            relay_timeout_ms: 600_000,
            max_connections: 1024,
            max_handshakes: 64,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 120_000,
            max_streams_per_connection: 1024,
            request_timeout_ms: 3_600_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            drain_deadline_secs: 10,
        }
    }
}

impl Limits {
    /// Checks the ranges.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        if self.max_payload_bytes == 0 || self.max_payload_bytes > 1 << 30 {
            return Err(ConfigError::new(
                file,
                "limits.max_payload_bytes",
                "must be between 1 and 1073741824",
            ));
        }
        for (key, value) in [
            ("limits.call_timeout_ms", self.call_timeout_ms),
            ("limits.relay_timeout_ms", self.relay_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::new(file, key, "must be positive"));
            }
        }
        if !(1..=MAX_DRAIN_DEADLINE_SECS).contains(&self.drain_deadline_secs) {
            return Err(ConfigError::new(
                file,
                "limits.drain_deadline_secs",
                format!("must be between 1 and {MAX_DRAIN_DEADLINE_SECS}"),
            ));
        }
        self.validate_listener(file)
    }

    /// The deadline of a drain that names none.
    pub fn drain_deadline(&self) -> Duration {
        Duration::from_secs(self.drain_deadline_secs)
    }

    fn validate_listener(&self, file: &Path) -> Result<(), ConfigError> {
        let positive = [
            ("limits.max_connections", self.max_connections as u64),
            ("limits.max_handshakes", self.max_handshakes as u64),
            ("limits.handshake_timeout_ms", self.handshake_timeout_ms),
            ("limits.idle_timeout_ms", self.idle_timeout_ms),
            (
                "limits.max_streams_per_connection",
                u64::from(self.max_streams_per_connection),
            ),
            ("limits.request_timeout_ms", self.request_timeout_ms),
            ("limits.keepalive_interval_ms", self.keepalive_interval_ms),
            ("limits.keepalive_timeout_ms", self.keepalive_timeout_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(file, field, "must be positive"));
            }
        }
        // A peer that answers pings is never idle by this measure.
        if self.idle_timeout_ms
            <= self
                .keepalive_interval_ms
                .saturating_add(self.keepalive_timeout_ms)
        {
            return Err(ConfigError::new(
                file,
                "limits.idle_timeout_ms",
                "must be longer than keepalive_interval_ms + keepalive_timeout_ms",
            ));
        }
        Ok(())
    }

    /// What each gRPC listener accepts at most.
    pub fn accept(&self) -> truc_pki::AcceptLimits {
        truc_pki::AcceptLimits {
            max_connections: self.max_connections,
            max_handshakes: self.max_handshakes,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
        }
    }

    /// The gRPC message limit that lets a payload of the maximum size through
    /// with its envelope, and nothing much larger.
    pub fn max_message_bytes(&self) -> usize {
        self.max_payload_bytes.saturating_add(64 * 1024)
    }
}

/// The `[tracing]` section of the hub's and the nodes' configs: where spans
/// are exported. Without `otlp_endpoint` nothing is exported (trace context
/// is still passed on).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSection {
    /// The OTLP/gRPC endpoint of a collector, `http://host:port` (4317 is
    /// the usual port). Plain HTTP/2: the collector runs beside the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the spans (default `truc-hub` or `truc-node`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The share of the traces this process starts, or that agency systems
    /// send, whose spans are exported (0 to 1, default 1). Traces from the
    /// hub or another node follow their sampled flag.
    pub sampling_ratio: f64,
}

impl Default for TracingSection {
    fn default() -> Self {
        TracingSection {
            otlp_endpoint: None,
            service_name: None,
            sampling_ratio: 1.0,
        }
    }
}

impl TracingSection {
    /// Whether the section is absent or says nothing (not written out then).
    pub fn is_default(&self) -> bool {
        *self == TracingSection::default()
    }

    /// Checks the endpoint, the name and the ratio.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let uri: http::Uri = endpoint.parse().map_err(|_| {
                ConfigError::new(
                    file,
                    "tracing.otlp_endpoint",
                    format!("{endpoint:?} is not a URL, e.g. http://127.0.0.1:4317"),
                )
            })?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(ConfigError::new(
                    file,
                    "tracing.otlp_endpoint",
                    format!(
                        "{endpoint:?}: must be http://host:port (OTLP over gRPC without TLS, to a collector beside the process)"
                    ),
                ));
            }
        }
        if let Some(name) = &self.service_name
            && (name.is_empty() || name.len() > 128 || !name.bytes().all(|c| c.is_ascii_graphic()))
        {
            return Err(ConfigError::new(
                file,
                "tracing.service_name",
                "must be 1 to 128 printable ASCII characters without spaces",
            ));
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(ConfigError::new(
                file,
                "tracing.sampling_ratio",
                "must be between 0 and 1",
            ));
        }
        Ok(())
    }

    /// The process's tracing: exported over OTLP where configured, as
    /// `service_name` or `default_service`, naming `process` in its spans.
    /// Needs a Tokio runtime when exporting.
    pub fn tracing(
        &self,
        default_service: &str,
        process: &str,
    ) -> Result<crate::trace::Tracing, crate::trace::TracingError> {
        let tracing = match &self.otlp_endpoint {
            Some(endpoint) => crate::trace::Tracing::otlp(
                endpoint,
                self.service_name.as_deref().unwrap_or(default_service),
                self.sampling_ratio,
            )?,
            None => crate::trace::Tracing::off(),
        };
        Ok(tracing.for_process(process))
    }
}

/// A client's config file (`truc call`, `truc report`): where to connect and
/// with which certificate.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of the node (or, for reports, the hub).
    pub address: String,
    /// Further replicas of the hub, `host:port` each: `truc report` asks
    /// `address` and these, and merges their statistics.
    pub replicas: Vec<String>,
    /// The name in the server's certificate.
    pub server_name: String,
    /// The client's certificate, key and CA.
    pub tls: TlsFiles,
}

/// A client's config file as written: what `ClientConfig::load` reads.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// The config format's version (1; absent means 1).
    #[serde(default = "config_version")]
    pub version: u32,
    /// `host:port` of the node (or, for reports, the hub).
    pub address: String,
    /// Further replicas of the hub (`host:port`, behind the same server name
    /// and CA), for `truc report`, which merges the statistics of `address`
    /// and these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The name in the server's certificate.
    pub server_name: String,
    /// The client's certificate, key and CA.
    pub tls: TlsSection,
}

impl ClientConfig {
    /// Loads `path`.
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        let raw: ClientFile = load_toml(path)?;
        check_version(path, raw.version)?;
        host_port(path, "address", &raw.address)?;
        for (i, a) in raw.addresses.iter().enumerate() {
            let field = format!("addresses[{i}]");
            host_port(path, &field, a)?;
            if *a == raw.address || raw.addresses[..i].contains(a) {
                return Err(ConfigError::new(
                    path,
                    &field,
                    format!("{a:?} is listed twice"),
                ));
            }
        }
        Ok(ClientConfig {
            address: raw.address,
            replicas: raw.addresses,
            server_name: raw.server_name,
            tls: raw.tls.resolve(path)?,
        })
    }

    /// This config once for `address` and once for each further replica,
    /// each with that one address.
    pub fn each_replica(&self) -> Vec<ClientConfig> {
        std::iter::once(&self.address)
            .chain(&self.replicas)
            .map(|address| ClientConfig {
                address: address.clone(),
                replicas: Vec::new(),
                ..self.clone()
            })
            .collect()
    }

    /// A lazily connecting channel to the server (the hub for an operator's
    /// certificate, a node for an agency system's: its identity is checked).
    pub fn channel(&self) -> Result<tonic::transport::Channel, truc_pki::PkiError> {
        truc_pki::install_crypto_provider();
        let tls = truc_pki::tool_client_config(&self.tls)?;
        truc_pki::channel(&self.address, &self.server_name, tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        listen: String,
        port: u16,
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(f.path(), text).expect("write");
        f
    }

    #[test]
    fn missing_unknown_and_mistyped_fields_are_named() {
        let f = write("port = 1\n");
        let e = load_toml::<Sample>(f.path()).expect_err("missing");
        assert_eq!(e.field, "listen", "{e}");
        let f = write("listen = \"a\"\nport = 1\nextra = 2\n");
        let e = load_toml::<Sample>(f.path()).expect_err("unknown");
        assert_eq!(e.field, "extra", "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        let f = write("listen = \"a\"\nport = \"x\"\n");
        let e = load_toml::<Sample>(f.path()).expect_err("type");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().contains(&f.path().display().to_string()));
    }

    #[test]
    fn listener_limits_are_read_and_checked() {
        #[derive(serde::Deserialize)]
        struct File {
            limits: Limits,
        }
        let f = write(
            "[limits]\nmax_connections = 7\nmax_handshakes = 3\nhandshake_timeout_ms = 500\nmax_streams_per_connection = 9\n",
        );
        let parsed: File = load_toml(f.path()).expect("parse");
        parsed.limits.validate(f.path()).expect("valid");
        assert_eq!(parsed.limits.max_streams_per_connection, 9);
        let accept = parsed.limits.accept();
        assert_eq!(accept.max_connections, 7);
        assert_eq!(accept.max_handshakes, 3);
        assert_eq!(accept.handshake_timeout, Duration::from_millis(500));
        assert_eq!(accept.idle_timeout, Duration::from_secs(120));
        Limits::default()
            .validate(f.path())
            .expect("defaults are valid");

        for (text, field) in [
            ("max_connections = 0", "limits.max_connections"),
            ("max_handshakes = 0", "limits.max_handshakes"),
            (
                "max_streams_per_connection = 0",
                "limits.max_streams_per_connection",
            ),
            ("idle_timeout_ms = 30000", "limits.idle_timeout_ms"),
            ("request_timeout_ms = 0", "limits.request_timeout_ms"),
        ] {
            let f = write(&format!("[limits]\n{text}\n"));
            let parsed: File = load_toml(f.path()).expect("parse");
            let e = parsed.limits.validate(f.path()).expect_err(text);
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn the_drain_deadline_is_read_defaults_to_ten_seconds_and_is_bounded() {
        #[derive(Debug, serde::Deserialize)]
        struct File {
            limits: Limits,
        }
        let f = write("[limits]\ndrain_deadline_secs = 30\n");
        let parsed: File = load_toml(f.path()).expect("parse");
        parsed.limits.validate(f.path()).expect("valid");
        assert_eq!(parsed.limits.drain_deadline(), Duration::from_secs(30));
        assert_eq!(Limits::default().drain_deadline(), Duration::from_secs(10));
        for text in ["drain_deadline_secs = 0", "drain_deadline_secs = 3601"] {
            let f = write(&format!("[limits]\n{text}\n"));
            let parsed: File = load_toml(f.path()).expect("parse");
            let e = parsed.limits.validate(f.path()).expect_err(text);
            assert_eq!(e.field, "limits.drain_deadline_secs", "{e}");
            assert!(e.message.contains("between 1 and 3600"), "{e}");
        }
        let f = write("[limits]\ndrain_deadline_secs = -1\n");
        let e = load_toml::<File>(f.path()).expect_err("negative");
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn client_config_versions() {
        let body = "address = \"127.0.0.1:7000\"\nserver_name = \"hub\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        let f = write(body);
        let file: ClientFile = load_toml(f.path()).expect("no version");
        assert_eq!(file.version, CONFIG_VERSION);
        let f = write(&format!("version = 3\n{body}"));
        let e = ClientConfig::load(f.path()).expect_err("version 3");
        assert_eq!(e.field, "version", "{e}");
        assert!(
            e.to_string().contains(&f.path().display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn client_config_replicas_are_checked() {
        let tls = "server_name = \"hub\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        let dir = tempfile::tempdir().expect("dir");
        for f in ["a", "b", "c"] {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
        let load = |head: &str| {
            let path = dir.path().join("admin.toml");
            std::fs::write(&path, format!("{head}\n{tls}")).expect("write");
            ClientConfig::load(&path)
        };
        let c = load("address = \"hub-0:7000\"\naddresses = [\"hub-1:7000\", \"10.0.0.3:7000\"]")
            .expect("valid");
        let each: Vec<String> = c.each_replica().into_iter().map(|c| c.address).collect();
        assert_eq!(each, ["hub-0:7000", "hub-1:7000", "10.0.0.3:7000"]);
        assert!(c.each_replica().iter().all(|c| c.replicas.is_empty()));
        assert_eq!(
            load("address = \"hub-0:7000\"")
                .expect("one")
                .each_replica()
                .len(),
            1
        );
        for (head, field) in [
            (
                "address = \"hub-0:7000\"\naddresses = [\"hub-0:7000\"]",
                "addresses[0]",
            ),
            (
                "address = \"hub-0:7000\"\naddresses = [\"hub-1:7000\", \"hub-1:7000\"]",
                "addresses[1]",
            ),
            (
                "address = \"hub-0:7000\"\naddresses = [\"hub-1\"]",
                "addresses[0]",
            ),
            (
                "address = \"hub-0:7000\"\naddresses = [\":7000\"]",
                "addresses[0]",
            ),
            ("address = \"hub-0:0\"", "address"),
            ("address = \"hub 0:7000\"", "address"),
        ] {
            let e = load(head).expect_err(head);
            assert_eq!(e.field, field, "{head}: {e}");
        }
    }

    #[test]
    fn tracing_section_is_checked() {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            tracing: TracingSection,
        }
        let f = write("");
        let parsed: File = load_toml(f.path()).expect("absent");
        assert!(parsed.tracing.is_default());
        parsed
            .tracing
            .validate(f.path())
            .expect("defaults are valid");
        let f = write(
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\nservice_name = \"truc-hub-a\"\nsampling_ratio = 0.25\n",
        );
        let parsed: File = load_toml(f.path()).expect("parse");
        parsed.tracing.validate(f.path()).expect("valid");
        assert_eq!(parsed.tracing.sampling_ratio, 0.25);
        for (text, field) in [
            (
                "otlp_endpoint = \"127.0.0.1:4317\"",
                "tracing.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"https://c:4317\"",
                "tracing.otlp_endpoint",
            ),
            ("otlp_endpoint = \"not a url\"", "tracing.otlp_endpoint"),
            ("service_name = \"\"", "tracing.service_name"),
            ("service_name = \"a b\"", "tracing.service_name"),
            ("sampling_ratio = 1.5", "tracing.sampling_ratio"),
            ("sampling_ratio = -0.1", "tracing.sampling_ratio"),
            ("sampling_ratio = nan", "tracing.sampling_ratio"),
        ] {
            let f = write(&format!("[tracing]\n{text}\n"));
            let parsed: File = load_toml(f.path()).expect("parse");
            let e = parsed.tracing.validate(f.path()).expect_err(text);
            assert_eq!(e.field, field, "{e}");
        }
        let f = write("[tracing]\nendpoint = \"http://c:4317\"\n");
        let e = load_toml::<File>(f.path())
            .map(|_| ())
            .expect_err("unknown key");
        assert_eq!(e.field, "endpoint", "{e}");
    }

    #[test]
    fn bad_address_names_the_field() {
        let e = socket_addr(Path::new("hub.toml"), "listen", "nowhere").expect_err("bad");
        assert_eq!(
            e.to_string(),
            "config hub.toml: listen: \"nowhere\" is not an ip:port address, e.g. 127.0.0.1:7000"
        );
    }
}
