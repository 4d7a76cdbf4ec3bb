//! Integration tests: the real server on loopback port 0, a temp data dir, a loopback JWKS
//! server with keys generated here, and real SQLite files or a real PostgreSQL server.

mod common;

mod admin_auth;
mod admin_security;
mod anchor;
mod audit;
mod backup;
mod bad_input;
mod browse;
mod dedup;
mod deploy;
mod dev_hosts;
mod filings;
mod gdpr;
mod gmail_labels;
mod group_commit;
mod hostile;
mod intake;
mod metrics;
mod object_store;
mod pg_faults;
mod purge;
mod replicas;
mod retention;
mod rules;
mod storage;
mod sweep_epoch;
mod teams;
mod tls;
mod undo;
