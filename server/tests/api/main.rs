//! HTTP-level tests of the whole application (`bindery_server::app`): one
//! test binary, modules per area. Storage is real (SQLite in a temp dir;
//! PostgreSQL where a test says so).

mod ad_delta;
mod ad_live;
mod auth;
mod bundle;
mod checklist;
mod delta;
mod directories;
mod dirlogin;
mod failover;
mod hardening;
mod helpers;
mod identity;
mod import;
mod live;
mod lockout;
mod parity;
mod rbac;
mod rest;
mod sync;
