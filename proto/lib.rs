//! The peerchat wire contract: code generated from `proto/peerchat/v1/*.proto`.
//!
//! Every other crate imports it as `use peerchat::v1 as pb;`. The `.proto`
//! files are the contract; anyone can write another client from them.
//! [`transport`] reads the typed cause of a call or stream that broke.

pub mod transport;

/// Package `peerchat.v1`: the `Directory`, `Chat` and `Control` services.
#[allow(unreachable_pub, missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("peerchat.v1");

    /// The encoded `FileDescriptorSet` of all three services, for gRPC
    /// server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/peerchat_descriptor.bin"));
}
