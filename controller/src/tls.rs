//! TLS without openssl or aws-lc: rustls with the `ring` provider (the one kube uses). reqwest is
//! built without a provider of its own, so one must be installed process-wide before a reqwest
//! client is built; every constructor of an HTTP source calls this first.

/// Install rustls' `ring` provider as the process default; later calls (or another provider already
/// installed) leave things as they are.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
