//! Integration tests against a real control plane (see `testkit`) and the Upstash emulator.
//!
//! One test binary, so one control plane serves every test; each test works in its own namespace.

mod admission;
mod admission_classes;
mod change_log;
mod crds;
mod credential_protection;
mod credentials;
mod deletion_protection;
mod events;
mod hardening;
mod lifecycle;
mod monitoring;
mod names;
mod namespaces;
mod preview;
mod protection;
mod reconcile_now;
mod restart_coalescing;
mod restarts;
mod safety;
mod support;
mod tenancy;
mod users;
mod windows;
