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
mod registry;
pub mod signed;

// A dev-dependency only the integration tests (`tests/`) use; the unit-test build links it too.
#[cfg(test)]
use tempfile as _;

pub use ids::{AgencyCode, IdError, NodeId, ServiceId};
pub use live::Live;
pub use registry::{Agency, Node, PurposeRule, Registry, RegistryError, Service};
