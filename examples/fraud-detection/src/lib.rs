//! The fraud-detection case study of mlcanary: a synthetic transaction data set, three tiny
//! fraud models (v1 stable, v2 better and fair, v3 better overall but biased against customers
//! aged 60+), a server that speaks the TF Serving REST API — a stand-in for TensorFlow Serving,
//! which cannot be installed here — and a traffic generator.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod data;
pub mod model;

/// Seeds of the training and held-out data sets (documented in the example's README).
pub const TRAIN_SEED: u64 = 7;
pub const TEST_SEED: u64 = 8;
pub const TRAIN_SIZE: usize = 40_000;

/// Train `version` on the example's training set.
pub fn trained(version: model::Version) -> model::Model {
    model::Model::train(version, &data::dataset(TRAIN_SEED, TRAIN_SIZE))
}
pub mod demo;
pub mod server;
pub mod traffic;
