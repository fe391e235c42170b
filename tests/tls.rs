//! `-H tcp://` is served only with TLS and client-certificate verification: the docker CLI
//! with a client certificate from the CA gets through; without one, or with one from
//! another CA, or in plain text, it does not.

use std::path::Path;

use anyhow::Result;
use berth_testkit::daemon::Berthd;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

struct Pki {
    ca_pem: String,
    issuer_params: CertificateParams,
    ca_key: KeyPair,
}

fn ca(name: &str) -> Result<Pki> {
    let ca_key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&ca_key)?;
    Ok(Pki {
        ca_pem: cert.pem(),
        issuer_params: p,
        ca_key,
    })
}

/// A leaf certificate signed by `pki`: (cert PEM, key PEM).
fn leaf(pki: &Pki, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    p.extended_key_usages = vec![usage];
    p.distinguished_name.push(
        DnType::CommonName,
        sans.first().copied().unwrap_or("client"),
    );
    let issuer = Issuer::from_params(&pki.issuer_params, &pki.ca_key);
    let cert = p.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p.display().to_string())
}

#[test]
fn tcp_needs_tls_with_a_client_certificate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = ca("berth test CA")?;
    let (srv_cert, srv_key) = leaf(
        &pki,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (cli_cert, cli_key) = leaf(&pki, &["client"], ExtendedKeyUsagePurpose::ClientAuth)?;
    let other = ca("another CA")?;
    let (bad_cert, bad_key) = leaf(&other, &["client"], ExtendedKeyUsagePurpose::ClientAuth)?;
    let ca_pem = write(dir.path(), "ca.pem", &pki.ca_pem)?;
    let srv_cert = write(dir.path(), "server-cert.pem", &srv_cert)?;
    let srv_key = write(dir.path(), "server-key.pem", &srv_key)?;
    let cli_cert = write(dir.path(), "cert.pem", &cli_cert)?;
    let cli_key = write(dir.path(), "key.pem", &cli_key)?;
    let bad_cert = write(dir.path(), "bad-cert.pem", &bad_cert)?;
    let bad_key = write(dir.path(), "bad-key.pem", &bad_key)?;

    // Plain TCP is refused at start.
    let plain = Berthd::start(&["-H", "tcp://127.0.0.1:23750"]);
    assert!(
        plain.is_err(),
        "berthd must refuse tcp:// without --tlsverify"
    );

    let d = Berthd::start(&[
        "-H",
        "tcp://127.0.0.1:23760",
        "--tlsverify",
        "--tlscacert",
        &ca_pem,
        "--tlscert",
        &srv_cert,
        "--tlskey",
        &srv_key,
    ])?;
    let docker = berth_testkit::daemon::docker_cli().display().to_string();
    let tcp = "tcp://127.0.0.1:23760";
    let run = |extra: &[&str]| -> Result<std::process::Output> {
        let mut args = vec![docker.as_str(), "-H", tcp];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["version", "--format", "{{.Server.APIVersion}}"]);
        Ok(d.in_netns(args[0], &args[1..])
            .env("DOCKER_CONFIG", d.root().join("docker-config"))
            .output()?)
    };
    let good = run(&[
        "--tlsverify",
        "--tlscacert",
        &ca_pem,
        "--tlscert",
        &cli_cert,
        "--tlskey",
        &cli_key,
    ])?;
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_eq!(String::from_utf8(good.stdout)?.trim(), "1.50");

    let no_cert = run(&["--tlsverify", "--tlscacert", &ca_pem])?;
    assert!(
        !no_cert.status.success(),
        "no client certificate must be refused"
    );
    let wrong_ca = run(&[
        "--tlsverify",
        "--tlscacert",
        &ca_pem,
        "--tlscert",
        &bad_cert,
        "--tlskey",
        &bad_key,
    ])?;
    assert!(
        !wrong_ca.status.success(),
        "a certificate from another CA must be refused"
    );
    let clear = run(&[])?;
    assert!(!clear.status.success(), "plain HTTP must not be answered");
    Ok(())
}
