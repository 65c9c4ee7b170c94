//! A registry that can be replaced while it is in use.

use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::{Registry, RegistryError};

/// The registry in force, replaceable as a whole (cheap to clone: clones
/// share it). Readers take [`current`](Live::current) once per request, so a
/// request sees one registry from start to end.
#[derive(Clone, Debug)]
pub struct Live {
    inner: Arc<RwLock<Arc<Registry>>>,
}

impl Live {
    /// Holds `registry`.
    pub fn new(registry: impl Into<Arc<Registry>>) -> Live {
        Live {
            inner: Arc::new(RwLock::new(registry.into())),
        }
    }

    /// The registry in force now.
    pub fn current(&self) -> Arc<Registry> {
        match self.inner.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `registry` in force.
    pub fn replace(&self, registry: impl Into<Arc<Registry>>) {
        let registry = registry.into();
        match self.inner.write() {
            Ok(mut r) => *r = registry,
            Err(poisoned) => *poisoned.into_inner() = registry,
        }
    }

    /// Loads `path` and puts it in force; a file that does not load or
    /// break a rule is an error and the registry in force stays.
    pub fn reload(&self, path: &Path) -> Result<Arc<Registry>, RegistryError> {
        let registry = Arc::new(Registry::load(path)?);
        self.replace(registry.clone());
        Ok(registry)
    }
}

impl From<Arc<Registry>> for Live {
    fn from(r: Arc<Registry>) -> Live {
        Live::new(r)
    }
}

impl From<Registry> for Live {
    fn from(r: Registry) -> Live {
        Live::new(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "[[agency]]\ncode = \"000.00.00.G22\"\nname = \"A\"\n";

    #[test]
    fn a_bad_file_leaves_the_registry_in_force() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("registry.toml");
        std::fs::write(&path, ONE).expect("write");
        let live = Live::new(Registry::load(&path).expect("load"));
        let reader = live.clone();
        std::fs::write(
            &path,
            format!("{ONE}[[agency]]\ncode = \"bad\"\nname = \"B\"\n"),
        )
        .expect("write");
        let e = live.reload(&path).expect_err("invalid");
        let text = e.to_string();
        assert!(
            text.contains("registry.toml") && text.contains("line 5"),
            "{text}"
        );
        assert_eq!(reader.current().agencies().count(), 1);
        std::fs::write(
            &path,
            format!("{ONE}[[agency]]\ncode = \"000.00.00.H37\"\nname = \"B\"\n"),
        )
        .expect("write");
        live.reload(&path).expect("valid");
        assert_eq!(
            reader.current().agencies().count(),
            2,
            "clones see the new one"
        );
    }
}
