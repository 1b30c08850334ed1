//! `sqlx::migrate!` embeds the migration files when this crate compiles,
//! but Cargo only knows about files the compiler read: a migration added
//! to a directory would not rebuild the crate, and a build would go on
//! without it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
