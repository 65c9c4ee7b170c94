//! TLS configurations that can be replaced while serving: new handshakes
//! (accepted or outgoing) use the configuration in force when they start,
//! and established connections whose peer certificate a new CRL revokes are
//! closed at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Waker};

use crate::crl::{CrlInfo, CrlSet, RefusalCounts, cert_key};
use crate::tls::Material;
use crate::{PkiError, Role, TlsFiles};

/// What is built from the files at one load.
struct State {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    crls: CrlSet,
}

/// One established connection, as the revocation check sees it.
struct Conn {
    /// (issuer, serial) of the peer's certificate.
    key: Option<(Vec<u8>, Vec<u8>)>,
    /// For the log.
    peer: String,
    cancel: Arc<Cancel>,
}

/// The TLS configuration of a server process (hub or node), reloadable from
/// its files, and the connections established under it.
pub struct LiveTls {
    files: TlsFiles,
    client_role: Option<Role>,
    state: RwLock<Arc<State>>,
    counts: Arc<RefusalCounts>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTls")
            .field("files", &self.files)
            .field("client_role", &self.client_role)
            .finish_non_exhaustive()
    }
}

impl LiveTls {
    /// Loads `files`; outgoing connections must reach a server of
    /// `client_role` (a node connects to the hub, the hub to nodes).
    pub fn load(files: TlsFiles, client_role: Option<Role>) -> Result<Arc<LiveTls>, PkiError> {
        let counts = Arc::new(RefusalCounts::default());
        let state = build(&files, client_role, counts.clone())?;
        Ok(Arc::new(LiveTls {
            files,
            client_role,
            state: RwLock::new(Arc::new(state)),
            counts,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }))
    }

    /// Reads the files again. A file that does not load or validate is an
    /// error and the configuration in force stays; otherwise new handshakes
    /// use the new one, and connections whose peer certificate the new CRLs
    /// revoke are closed. Returns how many were closed.
    pub fn reload(&self) -> Result<usize, PkiError> {
        let state = Arc::new(build(&self.files, self.client_role, self.counts.clone())?);
        let crls = state.crls.clone();
        match self.state.write() {
            Ok(mut s) => *s = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
        Ok(self.close_revoked(&crls))
    }

    fn current(&self) -> Arc<State> {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The files this configuration is loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The server config new accepted connections use.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.current().server.clone()
    }

    /// The client config new outgoing connections use.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.current().client.clone()
    }

    /// What the CRLs in force say.
    pub fn crls(&self) -> Vec<CrlInfo> {
        self.current().crls.info.clone()
    }

    /// Handshakes refused, by reason, in the order of
    /// [`REFUSAL_REASONS`](crate::REFUSAL_REASONS).
    pub fn refusals(&self) -> [u64; 4] {
        self.counts.snapshot()
    }

    /// Established connections (accepted and outgoing) being tracked.
    pub fn open_connections(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Starts tracking a connection whose peer presented `peer_cert`; it is
    /// closed at once if the CRLs in force already revoke it (a handshake
    /// that began before a reload).
    pub(crate) fn track(self: &Arc<Self>, peer_cert: Option<&[u8]>, peer: String) -> Guard {
        let cancel = Arc::new(Cancel::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key = peer_cert.and_then(cert_key);
        if peer_cert.is_some_and(|der| self.current().crls.revokes(der)) {
            tracing::warn!(%peer, "closing a connection: its peer certificate is revoked");
            cancel.cancel();
        }
        if let Ok(mut conns) = self.conns.lock() {
            conns.insert(
                id,
                Conn {
                    key,
                    peer,
                    cancel: cancel.clone(),
                },
            );
        }
        Guard {
            id,
            live: Arc::downgrade(self),
            cancel,
        }
    }

    fn close_revoked(&self, crls: &CrlSet) -> usize {
        let Ok(conns) = self.conns.lock() else {
            return 0;
        };
        let mut closed = 0;
        for conn in conns.values() {
            let revoked = conn
                .key
                .as_ref()
                .is_some_and(|k| crls.revokes_key(&k.0, &k.1));
            if revoked && !conn.cancel.is_cancelled() {
                tracing::warn!(peer = %conn.peer, "closing a connection: its peer certificate is now revoked");
                conn.cancel.cancel();
                closed += 1;
            }
        }
        closed
    }

    fn untrack(&self, id: u64) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&id);
        }
    }
}

fn build(
    files: &TlsFiles,
    client_role: Option<Role>,
    counts: Arc<RefusalCounts>,
) -> Result<State, PkiError> {
    let m = Material::load(files, counts)?;
    let server = m.server_config(files)?;
    let client = m.client_config(files, client_role)?;
    Ok(State {
        server,
        client,
        crls: m.crls,
    })
}

/// A flag that closes a connection: its reads and writes fail once set.
#[derive(Debug, Default)]
pub(crate) struct Cancel {
    flag: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Cancel {
    fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Ok(mut w) = self.waker.lock()
            && let Some(w) = w.take()
        {
            w.wake();
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Whether the flag is set; if not, `cx` is woken when it is.
    pub(crate) fn poll_cancelled(&self, cx: &Context<'_>) -> bool {
        if self.is_cancelled() {
            return true;
        }
        if let Ok(mut w) = self.waker.lock() {
            match w.as_ref() {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        self.is_cancelled()
    }
}

/// A connection's place among the tracked ones; dropping it stops tracking.
#[derive(Debug)]
pub(crate) struct Guard {
    id: u64,
    live: Weak<LiveTls>,
    pub(crate) cancel: Arc<Cancel>,
}

impl Guard {
    /// A guard that nothing ever cancels (a fixed configuration).
    pub(crate) fn untracked() -> Guard {
        Guard {
            id: 0,
            live: Weak::new(),
            cancel: Arc::default(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(live) = self.live.upgrade() {
            live.untrack(self.id);
        }
    }
}
