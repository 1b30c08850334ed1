//! Secrets never show in `Debug` or logs: one type for the whole server,
//! defined beside the directory client that needs it first.
pub use bindery_directory::Secret;
