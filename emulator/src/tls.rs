//! The data plane's TLS: a CA generated at start (or reloaded from the state file) and a leaf
//! certificate for `localhost`, `127.0.0.1`, `::1` and `*.<endpoint-domain>`.

use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::state::StoredCa;

pub struct Tls {
    pub ca: StoredCa,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// The calendar date `days` from today (negative = in the past), UTC.
fn ymd(days: i64) -> (i32, u8, u8) {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let d = today
        .checked_add(jiff::Span::new().days(days))
        .unwrap_or(today);
    (i32::from(d.year()), d.month() as u8, d.day() as u8)
}

macro_rules! set_validity {
    ($params:expr, $before:expr, $after:expr) => {{
        let (y, m, d) = ymd($before);
        $params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = ymd($after);
        $params.not_after = rcgen::date_time_ymd(y, m, d);
    }};
}

fn new_ca() -> anyhow::Result<StoredCa> {
    let key = KeyPair::generate().context("generating CA key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "upstash-emulator CA");
    dn.push(DnType::OrganizationName, "upstash-emulator");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity!(params, -1, 3650);
    let cert = params.self_signed(&key).context("self-signing CA")?;
    Ok(StoredCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Builds the TLS setup, reusing `existing` CA material when given.
pub fn setup(existing: Option<StoredCa>, endpoint_domain: Option<&str>) -> anyhow::Result<Tls> {
    let ca = match existing {
        Some(ca) => ca,
        None => new_ca()?,
    };
    let ca_key = KeyPair::from_pem(&ca.key_pem).context("loading CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).context("loading CA cert")?;

    let mut sans = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    if let Some(d) = endpoint_domain {
        sans.push(SanType::DnsName(d.to_string().try_into()?));
        sans.push(SanType::DnsName(format!("*.{d}").try_into()?));
    }
    let leaf_key = KeyPair::generate().context("generating leaf key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity!(params, -1, 825);
    let leaf = params
        .signed_by(&leaf_key, &issuer)
        .context("signing leaf")?;

    let ca_der = rustls_pemfile_der(&ca.cert_pem)?;
    let chain = vec![leaf.der().clone(), ca_der];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("TLS server certificate")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        ca,
        server_config: Arc::new(cfg),
    })
}

fn rustls_pemfile_der(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes()).context("parsing CA PEM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_reused() {
        let a = setup(None, Some("upstash.test")).unwrap();
        let b = setup(Some(a.ca.clone()), None).unwrap();
        assert_eq!(a.ca.cert_pem, b.ca.cert_pem);
        assert!(a.ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
