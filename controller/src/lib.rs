//! mlcanary control plane (work in progress).
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]
