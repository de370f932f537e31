//! Everything the engine binaries share: configuration, the job lifecycle, the streaming
//! pipeline, storage backends, callbacks, metrics and health pings, the manifest, logging and exit codes.
//!
//! An engine implements [`Engine`] (which commands, which format) and its `main` calls
//! [`job::main`].

pub mod callback;
pub mod catalog;
pub mod checks;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod engine;
pub mod env;
pub mod error;
pub mod http;
pub mod job;
pub mod keys;
pub mod logging;
pub mod manifest;
pub mod observe;
pub mod pipeline;
pub mod retention;
pub mod secret;
pub mod storage;
pub mod tool;

pub use config::{Config, DbConfig, Operation};
pub use engine::{DumpFormat, Engine, EngineInfo, ServerInfo};
pub use env::{ConfigError, EnvReader};
pub use error::{Error, ExitCode};
pub use manifest::Manifest;
pub use secret::Secret;
pub use tool::ToolCommand;
