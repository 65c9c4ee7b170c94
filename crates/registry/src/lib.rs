//! The truc registry: who the agencies are, which node hosts each of them,
//! which services exist and which client agencies are granted which services.
//! It provides validating newtypes for agency codes ([`AgencyCode`]), node ids
//! ([`NodeId`]) and service ids ([`ServiceId`]), loads and validates a TOML
//! registry file ([`Registry::load`]) with errors naming the file, line and
//! field, and converts it to the protobuf snapshot the hub serves. It is not
//! for networking, certificates, storage or policy beyond exact grants: it
//! does no I/O except reading the file, and it does not watch it for changes
//! (its holder, [`Live`], is replaced by whoever does).
//!
//! # File format
//!
//! Four arrays of tables; unknown keys are errors. Parents are optional;
//! `description` of a service may be omitted (empty).
//!
//! ```toml
//! [[agency]]
//! code = "000.00.00.G22"
//! name = "Văn phòng Chính phủ"
//!
//! [[agency]]
//! code = "000.00.00.H37"
//! name = "UBND tỉnh Lạng Sơn"
//!
//! [[agency]]
//! code = "000.01.37.H37"           # hypothetical department of Lạng Sơn
//! name = "Sở Tư pháp tỉnh Lạng Sơn"
//! parent = "000.00.00.H37"
//!
//! [[node]]
//! id = "ministry"
//! address = "127.0.0.1:7101"
//! agencies = ["000.00.00.G22"]
//!
//! [[node]]
//! id = "lgsp-langson"
//! address = "127.0.0.1:7201"
//! agencies = ["000.00.00.H37", "000.01.37.H37"]
//!
//! [[service]]
//! id = "000.00.00.G22/citizen-lookup/v1"
//! description = "Look up a citizen record"
//!
//! [[grant]]
//! client = "000.00.00.H37"
//! services = ["000.00.00.G22/citizen-lookup/v1"]
//! ```
//!
//! # Rules
//!
//! Every code and id parses; agency codes, node ids, node addresses and
//! service ids are unique; agency names are non-empty; parents exist and
//! parent chains have no cycles; node agencies exist and each agency is hosted
//! by at most one node; node addresses are `host:port` with a non-zero port;
//! a service's provider (the prefix of its id) exists and is hosted by a node;
//! grant clients and granted services exist.
//!
//! # Quotas
//!
//! An optional `[quota]` table limits data calls per (client agency,
//! service) pair, each pair with a token bucket of its own (see
//! [`Quotas`]): `rate` calls per second (0.0001 to 1 000 000), `burst` calls
//! at once (1 to 1 000 000; default: the rate rounded up), `replicas` hub
//! replicas the limits are divided between (default 1). Overrides name a
//! `client`, a `service` or both, with a `rate` (and `burst`) or
//! `unlimited = true`; the pair's override wins over the client's, the
//! client's over the service's, and any of them over the default. Without a
//! `[quota]` table, or a rate in it, calls are not limited.
//!
//! ```toml
//! [quota]
//! rate = 20
//! burst = 40
//! replicas = 3
//!
//! [[quota.override]]
//! client = "000.00.00.H37"
//! service = "000.00.00.G22/citizen-lookup/v1"
//! rate = 5
//! ```
//!
//! ```
//! use truc_registry::{AgencyCode, Registry, ServiceId};
//! let text = r#"
//! [[agency]]
//! code = "000.00.00.G22"
//! name = "Văn phòng Chính phủ"
//! [[node]]
//! id = "ministry"
//! address = "127.0.0.1:7101"
//! agencies = ["000.00.00.G22"]
//! [[service]]
//! id = "000.00.00.G22/citizen-lookup/v1"
//! [[grant]]
//! client = "000.00.00.G22"
//! services = ["000.00.00.G22/citizen-lookup/v1"]
//! "#;
//! let reg = Registry::from_toml_str(text, "example.toml")?;
//! let me: AgencyCode = "000.00.00.G22".parse()?;
//! let svc: ServiceId = "000.00.00.G22/citizen-lookup/v1".parse()?;
//! assert!(reg.is_granted(&me, &svc));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod ids;
mod live;
mod quota;
mod registry;
pub mod signed;

// A dev-dependency only the integration tests (`tests/`) use; the unit-test build links it too.
#[cfg(test)]
use tempfile as _;

pub use ids::{AgencyCode, IdError, NodeId, ServiceId};
pub use live::Live;
pub use quota::{Limit, Quotas};
pub use registry::{Agency, Node, PurposeRule, Registry, RegistryError, Service};
