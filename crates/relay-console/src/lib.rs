//! The operator console: server-rendered pages to see and steer the queue (overview,
//! the queue filtered and paged, one row with its attempts, the incoming callbacks)
//! and the actions of `n8n-relay queue ...` (retry, cancel, retry what a filter
//! selects, cleanup, pause and resume), through the same code as the CLI.
//!
//! - [`auth`]: tokens, sessions, CSRF;
//! - `sampler`: the overview's numbers, one query set for every viewer;
//! - `data`: the queries the pages read;
//! - `pages` and `chart`: maud templates and the SVG chart;
//! - `server`: routes, access checks, security headers.
//!
//! Depends on relay-core only: it serves beside the daemon (`n8n-relay run`) or
//! alone (`n8n-relay console`).

pub mod auth;
mod chart;
mod data;
mod pages;
mod sampler;
mod server;

pub use server::{serve, CSP};
