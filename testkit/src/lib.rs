//! Placeholder until testkit lands.
