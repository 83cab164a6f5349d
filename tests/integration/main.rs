//! Integration tests against a real control plane (see `testkit`) and the Upstash emulator.
//!
//! One test binary, so one control plane serves every test; each test works in its own namespace.

mod admission;
mod admission_classes;
mod crds;
mod credentials;
mod events;
mod hardening;
mod lifecycle;
mod monitoring;
mod names;
mod namespaces;
mod preview;
mod protection;
mod restarts;
mod safety;
mod support;
mod tenancy;
mod users;
mod windows;
