//! The fraud-detection case study of mlcanary: a synthetic transaction data set, four tiny
//! fraud models (v1 stable, v2 better and fair, v3 better overall but flagging customers aged 60+
//! far more often, v4 flagging them as often as v2 but missing most of their fraud), a server that
//! speaks the TF Serving REST API — a stand-in for TensorFlow Serving, which cannot be installed
//! here — and a traffic generator that also sends the labels learnt later.
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
pub mod feedback;
pub mod server;
pub mod traffic;
