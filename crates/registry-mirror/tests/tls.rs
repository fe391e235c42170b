//! HTTPS: a real registry (docker-registry) serving TLS with a self-signed certificate on
//! loopback. The client probes HTTPS first (as Docker does for insecure/loopback
//! registries), trusts the extra CA it is given, and refuses the registry without it.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_registry_mirror::{ClientConfig, Images, PullOptions, Reference};
use berth_testkit::Fixture;
use common::*;

/// docker-registry with TLS on 127.0.0.1:<free port>; killed (by PID) on drop.
struct TlsRegistry {
    child: Child,
    addr: String,
    ca_pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl TlsRegistry {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-tls-registry-")
            .tempdir()
            .unwrap();
        let ck = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let conf = dir.path().join("config.yml");
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("data").display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(berth_testkit::registry::registry_binary());
        cmd.arg("serve")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no parent memory;
        // the registry dies with the test process if the test is killed.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let reg = TlsRegistry {
            child,
            addr,
            ca_pem: ck.cert.pem().into_bytes(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            assert!(Instant::now() < deadline, "TLS registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn images(dir: &std::path::Path, ca: Option<&[u8]>) -> Images {
    Images::open(
        dir,
        ClientConfig {
            extra_root_certs_pem: ca.map(|c| vec![c.to_vec()]).unwrap_or_default(),
            ..ClientConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn push_and_pull_over_https_with_a_trusted_ca() {
    let fx = Fixture::from_env().expect("fixture registry (run via berth-fixture)");
    let tls = TlsRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // Pull from the fixture (plain HTTP) and push to the TLS registry.
    let a = images(&dir.path().join("a"), Some(&tls.ca_pem));
    let src = Reference::parse(&fx.reference("busybox:latest")).unwrap();
    let pulled = rt()
        .block_on(a.puller.pull(&src, &PullOptions::default(), None, &|_| {}))
        .unwrap();
    let target = Reference::parse(&format!("{}/tls/busybox:1", tls.addr)).unwrap();
    a.store
        .tag(&fx.reference("busybox:latest"), &target)
        .unwrap();
    rt().block_on(a.pusher.push(&target, &Default::default(), &|_| {}))
        .unwrap();
    assert!(
        a.client.base_url(&tls.addr).starts_with("https://"),
        "HTTPS was used"
    );
    assert!(
        a.client.base_url(&fx.registry).starts_with("http://"),
        "the fixture is plain HTTP"
    );
    // A fresh store pulls it back over HTTPS: same image.
    let b = images(&dir.path().join("b"), Some(&tls.ca_pem));
    let sink = DirSink::new(dir.path().join("b-snapshots"));
    let out = rt()
        .block_on(
            b.puller
                .pull(&target, &PullOptions::default(), Some(sink), &|_| {}),
        )
        .unwrap();
    assert_eq!(out.image_id, pulled.image_id);
    assert_eq!(out.manifest, pulled.manifest);
    // Without the CA the certificate is not trusted, and plain HTTP is no way around it.
    let c = images(&dir.path().join("c"), None);
    let err = rt()
        .block_on(
            c.puller
                .pull(&target, &PullOptions::default(), None, &|_| {}),
        )
        .unwrap_err();
    assert!(c.store.list().unwrap().is_empty(), "{err}");
}
