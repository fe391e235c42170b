//! Pulls from an in-test registry (127.0.0.1:0) for what a real registry will not do:
//! serve a blob whose bytes do not match its digest, serve hostile layers, and demand
//! Basic or Bearer-token authentication.

mod common;

use std::fs;

use berth_registry_mirror::{Credentials, Error, PullOptions, Reference};
use common::*;
use tar::EntryType;

const VICTIM: &[u8] = b"host file, must not change\n";

/// A pull that must fail and leave no trace: no blob, no image, no snapshot.
struct Hostile {
    env: Env,
    reg: FakeRegistry,
    outside: std::path::PathBuf,
}

impl Hostile {
    fn new(tar: &[u8]) -> Self {
        let env = Env::new();
        let outside = env.dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), VICTIM).unwrap();
        let reg = FakeRegistry::start(FakeAuth::None);
        reg.add("evil", "latest", &FakeImage::from_layer_tar(tar), None);
        Hostile { env, reg, outside }
    }

    fn pull(&self) -> Result<berth_registry_mirror::PullOutcome, Error> {
        let r = Reference::parse(&self.reg.reference("evil:latest")).unwrap();
        let ev = Events::default();
        rt().block_on(self.env.images.puller.pull(
            &r,
            &PullOptions::default(),
            self.env.sink_dyn(),
            &ev.callback(),
        ))
    }

    fn assert_nothing_happened(&self) {
        assert_eq!(fs::read(self.outside.join("victim")).unwrap(), VICTIM);
        assert_eq!(
            tree(&self.outside),
            vec!["victim".to_string()],
            "nothing new outside"
        );
        assert!(
            self.env.sink.entries().is_empty(),
            "no snapshot, no staging dir left: {:?}",
            self.env.sink.entries()
        );
        let blobs = self.env.images.store.blobs();
        let stored = blobs.list().unwrap();
        assert!(
            stored.len() <= 1,
            "at most the config is stored: {stored:?}"
        );
        assert!(blobs.partial_writes().unwrap().is_empty());
        assert!(
            self.env.images.store.list().unwrap().is_empty(),
            "no image recorded"
        );
    }
}

fn assert_sink_error(err: &Error, needle: &str) {
    assert!(
        matches!(err, Error::LayerSink { .. }),
        "want a layer error, got {err}"
    );
    let chain = format!(
        "{err}: {}",
        std::error::Error::source(err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(
        chain.contains(needle),
        "{chain:?} should mention {needle:?}"
    );
}

#[test]
fn tampered_blob_fails_with_digest_mismatch_and_stores_nothing() {
    let env = Env::new();
    let tar = raw_tar(&[("hello.txt", EntryType::Regular, None, b"hello")]);
    let img = FakeImage::from_layer_tar(&tar);
    // Same length, one byte flipped in the middle of the compressed stream.
    let mut bad = img.layer.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    let other = FakeImage {
        manifest: Vec::new(),
        config: Vec::new(),
        layer: bad,
    };
    let reg = FakeRegistry::start(FakeAuth::None);
    reg.add("app", "latest", &img, Some(other.layer.clone()));
    let r = Reference::parse(&reg.reference("app:latest")).unwrap();
    let ev = Events::default();
    let err = rt()
        .block_on(env.images.puller.pull(
            &r,
            &PullOptions::default(),
            env.sink_dyn(),
            &ev.callback(),
        ))
        .unwrap_err();
    match &err {
        Error::DigestMismatch {
            what,
            expected,
            actual,
        } => {
            assert_eq!(*what, "blob");
            assert_eq!(expected.to_string(), sha256(&img.layer));
            assert_eq!(actual.to_string(), sha256(&other.layer));
        }
        other => panic!("want a digest mismatch, got {other}"),
    }
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(!err.is_retryable());
    let blobs = env.images.store.blobs();
    assert!(!blobs.contains(&sha256(&img.layer).parse().unwrap()));
    assert!(!blobs.contains(&sha256(&other.layer).parse().unwrap()));
    assert!(blobs.partial_writes().unwrap().is_empty());
    assert!(
        env.sink.entries().is_empty(),
        "no snapshot: {:?}",
        env.sink.entries()
    );
    assert!(env.images.store.list().unwrap().is_empty());
}

#[test]
fn tampered_config_fails_and_stores_nothing() {
    let env = Env::new();
    let img = FakeImage::from_layer_tar(&raw_tar(&[("a", EntryType::Regular, None, b"a")]));
    let reg = FakeRegistry::start(FakeAuth::None);
    reg.add("app", "latest", &img, None);
    let mut bad_config = img.config.clone();
    bad_config[0] = b' ';
    reg.set_blob("app", &sha256(&img.config), bad_config);
    let r = Reference::parse(&reg.reference("app:latest")).unwrap();
    let ev = Events::default();
    let err = rt()
        .block_on(
            env.images
                .puller
                .pull(&r, &PullOptions::default(), None, &ev.callback()),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::DigestMismatch { what: "config", .. }),
        "{err}"
    );
    assert!(env.images.store.blobs().list().unwrap().is_empty());
    assert!(env.images.store.list().unwrap().is_empty());
}

#[test]
fn hostile_layer_dotdot_path_is_refused() {
    let h = Hostile::new(&raw_tar(&[(
        "../outside/victim",
        EntryType::Regular,
        None,
        b"pwned",
    )]));
    let err = h.pull().unwrap_err();
    assert_sink_error(&err, "contains '..'");
    h.assert_nothing_happened();
}

#[test]
fn hostile_layer_absolute_path_is_refused() {
    // The absolute path names the real host file of this scratch area.
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), VICTIM).unwrap();
    let abs = outside.join("victim");
    let reg = FakeRegistry::start(FakeAuth::None);
    let tar = raw_tar(&[(abs.to_str().unwrap(), EntryType::Regular, None, b"pwned")]);
    reg.add("evil", "latest", &FakeImage::from_layer_tar(&tar), None);
    let h = Hostile { env, reg, outside };
    let err = h.pull().unwrap_err();
    assert_sink_error(&err, "absolute path");
    h.assert_nothing_happened();
}

#[test]
fn hostile_layer_symlink_then_write_through_it_is_refused() {
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), VICTIM).unwrap();
    let reg = FakeRegistry::start(FakeAuth::None);
    let tar = raw_tar(&[
        (
            "escape",
            EntryType::Symlink,
            Some(outside.to_str().unwrap()),
            b"",
        ),
        ("escape/victim", EntryType::Regular, None, b"pwned"),
        ("escape/new-file", EntryType::Regular, None, b"pwned"),
    ]);
    reg.add("evil", "latest", &FakeImage::from_layer_tar(&tar), None);
    let h = Hostile { env, reg, outside };
    let err = h.pull().unwrap_err();
    assert_sink_error(&err, "through a symlink");
    h.assert_nothing_happened();
}

#[test]
fn hostile_layer_hardlink_to_outside_file_is_refused() {
    for target in ["../outside/victim", "escape/victim"] {
        let env = Env::new();
        let outside = env.dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), VICTIM).unwrap();
        let reg = FakeRegistry::start(FakeAuth::None);
        let tar = raw_tar(&[
            (
                "escape",
                EntryType::Symlink,
                Some(outside.to_str().unwrap()),
                b"",
            ),
            ("stolen", EntryType::Link, Some(target), b""),
        ]);
        reg.add("evil", "latest", &FakeImage::from_layer_tar(&tar), None);
        let h = Hostile { env, reg, outside };
        let err = h.pull().unwrap_err();
        assert_sink_error(&err, "unsafe hardlink");
        h.assert_nothing_happened();
        let md = fs::metadata(h.outside.join("victim")).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::nlink(&md),
            1,
            "{target}: no link made to the victim"
        );
    }
}

#[test]
fn bearer_token_challenge_is_answered_with_credentials() {
    let env = Env::new();
    let img = FakeImage::from_layer_tar(&raw_tar(&[("f", EntryType::Regular, None, b"data")]));
    let reg = FakeRegistry::start(FakeAuth::Bearer {
        user: "alice".into(),
        pass: "s3cret".into(),
    });
    reg.add("private/app", "v1", &img, None);
    let r = Reference::parse(&reg.reference("private/app:v1")).unwrap();
    let ev = Events::default();
    let err = rt()
        .block_on(
            env.images
                .puller
                .pull(&r, &PullOptions::default(), None, &ev.callback()),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::Unauthorized { status: 401, .. }),
        "anonymous: {err}"
    );
    let opts = PullOptions {
        credentials: Credentials::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        },
        ..PullOptions::default()
    };
    let out = rt()
        .block_on(
            env.images
                .puller
                .pull(&r, &opts, env.sink_dyn(), &ev.callback()),
        )
        .unwrap();
    assert_eq!(out.image_id.to_string(), sha256(&img.config));
    let reqs = reg.requests();
    assert!(
        reqs.iter().any(|r| r.starts_with("GET /token?")
            && r.contains("scope=repository%3Aprivate%2Fapp%3Apull")),
        "{reqs:?}"
    );
}

#[test]
fn basic_auth_challenge_is_answered() {
    let env = Env::new();
    let img = FakeImage::from_layer_tar(&raw_tar(&[("f", EntryType::Regular, None, b"data")]));
    let reg = FakeRegistry::start(FakeAuth::Basic {
        user: "bob".into(),
        pass: "pw".into(),
    });
    reg.add("app", "latest", &img, None);
    let r = Reference::parse(&reg.reference("app")).unwrap();
    let ev = Events::default();
    let opts = PullOptions {
        credentials: Credentials::Basic {
            username: "bob".into(),
            password: "pw".into(),
        },
        ..PullOptions::default()
    };
    let out = rt()
        .block_on(env.images.puller.pull(&r, &opts, None, &ev.callback()))
        .unwrap();
    assert_eq!(out.image_id.to_string(), sha256(&img.config));
    let wrong = PullOptions {
        credentials: Credentials::Basic {
            username: "bob".into(),
            password: "nope".into(),
        },
        ..PullOptions::default()
    };
    let env2 = Env::new();
    let err = rt()
        .block_on(env2.images.puller.pull(&r, &wrong, None, &ev.callback()))
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
}

#[test]
fn gzip_zstd_and_uncompressed_layers_unpack_the_same_tree() {
    let tar = raw_tar(&[
        ("etc/", EntryType::Directory, None, b""),
        ("etc/motd", EntryType::Regular, None, b"layer content\n"),
    ]);
    let reg = FakeRegistry::start(FakeAuth::None);
    for c in ["gzip", "zstd", "none"] {
        reg.add(
            &format!("img-{c}"),
            "latest",
            &FakeImage::with_compression(&tar, c),
            None,
        );
    }
    for c in ["gzip", "zstd", "none"] {
        let env = Env::new();
        let r = Reference::parse(&reg.reference(&format!("img-{c}:latest"))).unwrap();
        let out = rt()
            .block_on(
                env.images
                    .puller
                    .pull(&r, &PullOptions::default(), env.sink_dyn(), &|_| {}),
            )
            .unwrap_or_else(|e| panic!("{c}: {e}"));
        let rec = env.images.store.resolve(&out.image_id.to_string()).unwrap();
        assert_eq!(rec.layers[0].diff_size, tar.len() as u64, "{c}");
        let dir = env.sink.layer_dir(rec.chain_ids()[0].hex());
        assert_eq!(
            fs::read(dir.join("etc/motd")).unwrap(),
            b"layer content\n",
            "{c}"
        );
    }
}

#[test]
fn layer_whose_diff_id_does_not_match_the_config_is_refused() {
    let env = Env::new();
    let tar = raw_tar(&[("a", EntryType::Regular, None, b"a")]);
    let mut img = FakeImage::from_layer_tar(&tar);
    // A config naming another diff ID; the manifest is rebuilt to match that config.
    let other = raw_tar(&[("b", EntryType::Regular, None, b"b")]);
    let cfg: serde_json::Value = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&other)]},
    });
    img.config = serde_json::to_vec(&cfg).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    m["config"]["digest"] = sha256(&img.config).into();
    m["config"]["size"] = img.config.len().into();
    img.manifest = serde_json::to_vec(&m).unwrap();
    let reg = FakeRegistry::start(FakeAuth::None);
    reg.add("app", "latest", &img, None);
    let r = Reference::parse(&reg.reference("app:latest")).unwrap();
    let err = rt()
        .block_on(
            env.images
                .puller
                .pull(&r, &PullOptions::default(), env.sink_dyn(), &|_| {}),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::DigestMismatch {
                what: "layer diff ID",
                ..
            }
        ),
        "{err}"
    );
    assert!(env.sink.entries().is_empty(), "{:?}", env.sink.entries());
    assert!(env.images.store.list().unwrap().is_empty());
}

#[test]
fn bare_name_pull_is_tagged_latest() {
    let env = Env::new();
    let img = FakeImage::from_layer_tar(&raw_tar(&[("f", EntryType::Regular, None, b"x")]));
    let reg = FakeRegistry::start(FakeAuth::None);
    reg.add("app", "latest", &img, None);
    let r = Reference::parse_normalized(&reg.reference("app")).unwrap();
    assert_eq!(r.tag(), None);
    let out = rt()
        .block_on(
            env.images
                .puller
                .pull(&r, &PullOptions::default(), None, &|_| {}),
        )
        .unwrap();
    let rec = env
        .images
        .store
        .resolve(&reg.reference("app:latest"))
        .unwrap();
    assert_eq!(rec.id, out.image_id);
}

#[test]
fn transient_registry_errors_are_retried_and_permanent_ones_reported() {
    let img = FakeImage::from_layer_tar(&raw_tar(&[("f", EntryType::Regular, None, b"x")]));
    let reg = FakeRegistry::start(FakeAuth::None);
    reg.add("app", "latest", &img, None);
    let r = Reference::parse(&reg.reference("app:latest")).unwrap();
    // The config GET is not retried (small, first); fail only the layer's first two GETs.
    let env = Env::new();
    rt().block_on(
        env.images
            .puller
            .pull(&r, &PullOptions::default(), None, &|_| {}),
    )
    .unwrap();
    let env = Env::new();
    env.images.store.blobs().put(&img.config).unwrap();
    reg.fail_next_blob_gets(2);
    let out = rt()
        .block_on(
            env.images
                .puller
                .pull(&r, &PullOptions::default(), env.sink_dyn(), &|_| {}),
        )
        .unwrap();
    assert_eq!(out.blobs_fetched, 1);
    assert!(env.images.store.blobs().fsck().unwrap().is_empty());
    // Three failures in a row exhaust the attempts: a retryable error is returned.
    let env = Env::new();
    env.images.store.blobs().put(&img.config).unwrap();
    reg.fail_next_blob_gets(3);
    let err = rt()
        .block_on(
            env.images
                .puller
                .pull(&r, &PullOptions::default(), env.sink_dyn(), &|_| {}),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::RegistryStatus { status: 503, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(env.sink.entries().is_empty());
    assert!(env
        .images
        .store
        .blobs()
        .partial_writes()
        .unwrap()
        .is_empty());
}

fn host_of(reg: &FakeRegistry) -> String {
    reg.reference("x")
        .split('/')
        .next()
        .expect("host")
        .to_string()
}

#[test]
fn login_follows_the_bearer_token_flow_of_the_realm() {
    let env = Env::new();
    let reg = FakeRegistry::start(FakeAuth::Bearer {
        user: "alice".into(),
        pass: "s3cret".into(),
    });
    let host = host_of(&reg);
    let good = Credentials::Basic {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    rt().block_on(env.images.client.login(&host, &good))
        .unwrap();
    let reqs = reg.requests();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("GET /token?") && r.contains("service=fake")),
        "token asked of the realm: {reqs:?}"
    );
    let bad = Credentials::Basic {
        username: "alice".into(),
        password: "nope".into(),
    };
    let err = rt()
        .block_on(env.images.client.login(&host, &bad))
        .unwrap_err();
    match &err {
        Error::LoginFailed {
            message,
            unauthorized: true,
        } => assert_eq!(
            message,
            &format!("Get \"http://{host}/v2/\": unauthorized: authentication required")
        ),
        other => panic!("wrong password: {other:?}"),
    }
}

#[test]
fn login_answers_a_basic_challenge_with_dockerds_messages() {
    let env = Env::new();
    let reg = FakeRegistry::start(FakeAuth::Basic {
        user: "bob".into(),
        pass: "pw".into(),
    });
    let host = host_of(&reg);
    let good = Credentials::Basic {
        username: "bob".into(),
        password: "pw".into(),
    };
    rt().block_on(env.images.client.login(&host, &good))
        .unwrap();
    let bad = Credentials::Basic {
        username: "bob".into(),
        password: "nope".into(),
    };
    let err = rt()
        .block_on(env.images.client.login(&host, &bad))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("login attempt to http://{host}/v2/ failed with status: 401 Unauthorized")
    );
    assert!(matches!(
        err,
        Error::LoginFailed {
            unauthorized: false,
            ..
        }
    ));
    let err = rt()
        .block_on(env.images.client.login(&host, &Credentials::Anonymous))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Get \"http://{host}/v2/\": no basic auth credentials")
    );
    // A registry without auth accepts any login, as with dockerd.
    let open = FakeRegistry::start(FakeAuth::None);
    rt().block_on(env.images.client.login(&host_of(&open), &bad))
        .unwrap();
}

#[test]
fn login_to_an_unreachable_registry_names_the_url() {
    let env = Env::new();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = l.local_addr().unwrap().to_string();
    drop(l);
    let err = rt()
        .block_on(env.images.client.login(&host, &Credentials::Anonymous))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("Get \"http://{host}/v2/\": ")) && msg.contains("refused"),
        "{msg}"
    );
}

/// A token or Basic header earned with one client's credentials is never reused for
/// another client's request (the client caches them per credentials).
#[test]
fn credentials_of_one_pull_never_authorise_another() {
    for auth in [
        FakeAuth::Bearer {
            user: "alice".into(),
            pass: "s3cret".into(),
        },
        FakeAuth::Basic {
            user: "alice".into(),
            pass: "s3cret".into(),
        },
    ] {
        let env = Env::new();
        let img =
            FakeImage::from_layer_tar(&raw_tar(&[("f", EntryType::Regular, None, b"private")]));
        let reg = FakeRegistry::start(auth);
        reg.add("private/app", "v1", &img, None);
        let r = Reference::parse(&reg.reference("private/app:v1")).unwrap();
        let ev = Events::default();
        let good = PullOptions {
            credentials: Credentials::Basic {
                username: "alice".into(),
                password: "s3cret".into(),
            },
            ..PullOptions::default()
        };
        rt().block_on(env.images.puller.pull(&r, &good, None, &ev.callback()))
            .unwrap();
        for creds in [
            Credentials::Anonymous,
            Credentials::Basic {
                username: "alice".into(),
                password: "wrong".into(),
            },
        ] {
            let opts = PullOptions {
                credentials: creds.clone(),
                ..PullOptions::default()
            };
            let err = rt()
                .block_on(env.images.puller.pull(&r, &opts, None, &ev.callback()))
                .unwrap_err();
            assert!(
                matches!(err, Error::Unauthorized { .. }),
                "{creds:?}: {err}"
            );
        }
    }
}
