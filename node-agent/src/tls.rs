//! The process's TLS crypto provider.
//!
//! The HTTP clients of the alert receivers and of the OTLP HTTP exporter share one reqwest
//! built on rustls without a built-in provider; rustls then needs a process-wide default
//! installed before any client is built. The agent installs ring (the provider the kube
//! client already uses) once, from every place that builds one.

use std::sync::Once;

static CRYPTO: Once = Once::new();

/// Installs ring as the process's default rustls provider, once; a provider installed
/// earlier by anything else is kept.
pub fn ensure_crypto_provider() {
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_provider_is_installed_and_installing_again_is_harmless() {
        super::ensure_crypto_provider();
        super::ensure_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
