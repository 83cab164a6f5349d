//! upstash-operator
