//! Leases in the database keep replicas from running a directory's job
//! twice.

use bindery_model::DirectoryKind;
use bindery_store::Store;

use crate::util::now_ms;
use crate::{Error, Result, Service};

const LEASE_TTL_MS: i64 = 60_000;
const LEASE_RENEW: std::time::Duration = std::time::Duration::from_secs(15);

/// The lease on a directory's staging snapshot: one enumeration or sync
/// at a time per directory, across every replica sharing the database.
pub(crate) struct Lease {
    name: String,
    holder: String,
}

pub(crate) struct KeptLease {
    lease: Lease,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// A new holder's claim on the directory's staging lease (not yet taken).
    pub(crate) fn staging(kind: DirectoryKind) -> Lease {
        Lease { name: format!("staging:{}", kind.as_str()), holder: crate::util::random_token() }
    }

    /// The lease as [`Store::start_leased_run`] takes it.
    pub(crate) fn claim(&self) -> (&str, &str, i64) {
        (&self.name, &self.holder, LEASE_TTL_MS)
    }

    pub(crate) async fn bind_run(&self, store: &Store, run_id: i64) -> Result<()> {
        store.acquire_lease(&self.name, &self.holder, run_id, now_ms(), LEASE_TTL_MS).await?;
        Ok(())
    }

    /// Give the lease back (one that was never kept alive).
    pub(crate) async fn release(self, store: &Store) {
        if let Err(e) = store.release_lease(&self.name, &self.holder).await {
            tracing::warn!(error = %e, "releasing the sync lease failed (it expires by itself)");
        }
    }

    /// Renew the lease in the background until released.
    pub(crate) fn keep_alive(self, store: Store) -> KeptLease {
        let (name, holder) = (self.name.clone(), self.holder.clone());
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                match store.renew_lease(&name, &holder, now_ms(), LEASE_TTL_MS).await {
                    Ok(true) => {}
                    Ok(false) => tracing::error!(lease = %name, "sync lease lost"),
                    Err(e) => tracing::warn!(lease = %name, error = %e, "renewing the sync lease failed"),
                }
            }
        });
        KeptLease { lease: self, renew }
    }
}

impl KeptLease {
    pub(crate) async fn release(self, store: &Store) {
        self.renew.abort();
        self.lease.release(store).await;
    }
}

impl Service {
    pub(crate) async fn take_staging_lease(&self, kind: DirectoryKind) -> Result<Lease> {
        let lease = Lease::staging(kind);
        if !self.store.acquire_lease(&lease.name, &lease.holder, 0, now_ms(), LEASE_TTL_MS).await? {
            return Err(lease_held(kind));
        }
        Ok(lease)
    }
}

/// The answer when another enumeration or sync holds the directory's lease.
pub(crate) fn lease_held(kind: DirectoryKind) -> Error {
    Error::Conflict(format!("a user enumeration or sync of {} is already running", kind.label()))
}
