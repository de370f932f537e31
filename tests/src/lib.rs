//! Fixtures for end-to-end tests of backup-runner.
//!
//! Every fixture runs a real server as a local process (PostgreSQL, moto's
//! and s3s-fs's S3 servers) or in-process on its own thread (the callback receiver), bound
//! to 127.0.0.1 on a free port, and tears it down on drop.

mod callback;
pub mod containers;
pub mod demo;
pub mod matrix;
pub mod mysql_hard;
pub mod mysql_sample;
pub mod pg_sample;
mod postgres;
pub mod proxy;
pub mod pushgateway;
pub mod redis_client;
pub mod redis_sample;
mod s3;
mod s3s;
pub mod scenario;
pub mod server_set;
mod util;

pub use callback::{CallbackReceiver, Recorded};
pub use postgres::{psql, PgServer};
pub use s3::{S3Api, S3Server};
pub use s3s::S3sServer;
pub use util::{free_port, kill_group, start_http_server, workspace_root};
