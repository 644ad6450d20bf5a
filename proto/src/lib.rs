//! skiff-proto: the generated gRPC code for `proto/worker.proto`, the only
//! channel between the control plane (`api`) and a host agent (`worker`).
//!
//! The `.proto` file documents the contract: level-triggered assignment sets
//! from the control plane, idempotent status reports from the worker.

#![allow(clippy::all)]
// Generated code does not follow our lints.
#[allow(missing_docs)]
pub mod v1 {
    tonic::include_proto!("skiff.worker.v1");
}

pub use v1::*;
