//! Sync: the same job for "Sync now" and the schedule — enumerate into the
//! staging snapshot, compute the plan with a pure function, then apply it
//! in chunked transactions. An incomplete enumeration disables nobody; a
//! plan that would disable more than the threshold waits for approval.
//! Leases in the database keep replicas from running a directory's job
//! twice; a compare-and-set on `next_run_at` makes one replica own each
//! firing of the schedule.
//!
//! The seams: `settings` (validated settings, the view the Sync card
//! shows), `schedule` (when a sync runs, and the scheduler's tick),
//! `lease` (one run per directory's snapshot across replicas), `job` (a
//! run: enumerate → plan → threshold → apply), `plan` (the pure rule over
//! each staged row, recorded as the run's items), `apply` (the items in
//! chunked transactions), `approval` (a held run approved or rejected),
//! `groups` (directory groups rebuilt from the snapshot), `runs` (the Sync
//! runs page and its CSV) and `notify` (reports, by email over SMTP).

mod apply;
mod approval;
pub(crate) mod first_load;
mod groups;
mod job;
mod lease;
mod notify;
mod plan;
mod runs;
mod schedule;
mod settings;

pub use plan::{action_of, over_threshold};
pub use schedule::Schedule;
pub(crate) use settings::delta_fingerprint;

/// Rows per plan read (and, five times over, per membership read).
const CHUNK: i64 = 1000;

/// A run's note when it ended a first sync's bulk load (`bindery_store` `bulk.rs`).
const BULK_LOAD_NOTE: &str = "first sync: the import table was loaded without its indexes of sorts and search (on PostgreSQL also without the others, which were built once its rows were in); they are built once the sync has ended, and until then its pages sort and search a little slower";
