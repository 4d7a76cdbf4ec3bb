//! docket: file Gmail messages into a law firm's matters, cases and contracts — per-tenant
//! databases and storage, encrypted blobs, a verifiable audit chain.

pub mod access;
pub mod accounts;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dev;
pub mod directory;
pub mod error;
pub mod eval;
pub mod filing;
pub mod firm_settings;
pub mod gdpr;
pub mod gmail;
pub mod http;
pub mod mail;
pub mod maintenance;
pub mod metrics;
pub mod purge;
pub mod retention;
pub mod rules;
pub mod storage;
pub mod suggest;
pub mod sweep_epoch;
pub mod tenancy;
pub mod time_fmt;

pub use app::{Application, Mode};
pub use config::Config;
