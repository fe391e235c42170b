//! Pull, push, save/load against the fixture registry (a real CNCF Distribution registry
//! serving deterministic busybox images). Run through `berth-fixture run -- cargo test`.

mod common;

use std::fs;

use berth_registry_mirror::archive;
use berth_registry_mirror::{Error, Platform, PullEvent, PullOptions, Reference};
use berth_testkit::Fixture;
use common::*;

fn fixture() -> Fixture {
    Fixture::from_env().expect("fixture registry (run via berth-fixture)")
}

fn pull(
    env: &Env,
    reference: &str,
    opts: &PullOptions,
) -> (berth_registry_mirror::PullOutcome, Events) {
    let r = Reference::parse(reference).unwrap();
    let ev = Events::default();
    let out = rt()
        .block_on(
            env.images
                .puller
                .pull(&r, opts, env.sink_dyn(), &ev.callback()),
        )
        .unwrap_or_else(|e| panic!("pull {reference}: {e}"));
    (out, ev)
}

fn queued(ev: &Events) -> usize {
    ev.count(|e| matches!(e, PullEvent::LayerQueued { .. }))
}

#[test]
fn pull_busybox_by_tag_verifies_stores_and_unpacks() {
    let fx = fixture();
    let env = Env::new();
    let want = fx.image("busybox:latest");
    let (out, ev) = pull(
        &env,
        &fx.reference("busybox:latest"),
        &PullOptions::default(),
    );
    assert_eq!(out.image_id.to_string(), want.config_digest);
    assert_eq!(out.digest.to_string(), want.manifest_digest);
    assert_eq!(out.blobs_fetched, 2, "config + one layer");
    assert!(out.new);
    assert_eq!(queued(&ev), 1);
    // Progress: Downloading events climb to the layer's size.
    let progress: Vec<(u64, u64)> = ev
        .all()
        .iter()
        .filter_map(|e| match e {
            PullEvent::LayerProgress { done, total, .. } => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(
        progress.last().unwrap(),
        &(want.layers[0].size, want.layers[0].size)
    );
    // Stored blobs verify; the layer is unpacked.
    let blobs = env.images.store.blobs();
    assert!(blobs.fsck().unwrap().is_empty());
    for l in &want.layers {
        assert!(blobs.contains(&l.digest.parse().unwrap()));
    }
    let record = env
        .images
        .store
        .resolve(&fx.reference("busybox:latest"))
        .unwrap();
    let chain = &record.chain_ids()[0];
    let root = env.sink.layer_dir(chain.hex());
    let bb = fs::metadata(root.join("bin/busybox")).unwrap();
    assert!(bb.len() > 100_000);
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    // Inspect data.
    let d = env
        .images
        .store
        .inspect(&fx.reference("busybox:latest"))
        .unwrap();
    assert_eq!((d.architecture.as_str(), d.os.as_str()), ("amd64", "linux"));
    assert_eq!(d.rootfs_layers[0].to_string(), want.layers[0].diff_id);
    assert_eq!(d.created.as_deref(), Some(berth_testkit::image::CREATED));
    assert_eq!(d.config.as_ref().unwrap()["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(d.history.len(), 2);
    assert!(d.size > bb.len());
    assert_eq!(d.repo_tags, vec![fx.reference("busybox:latest")]);
    assert_eq!(
        d.repo_digests,
        vec![format!("{}/busybox@{}", fx.registry, want.manifest_digest)]
    );
}

#[test]
fn pulling_again_fetches_nothing() {
    let fx = fixture();
    let env = Env::new();
    pull(
        &env,
        &fx.reference("busybox:latest"),
        &PullOptions::default(),
    );
    let (out, ev) = pull(
        &env,
        &fx.reference("busybox:latest"),
        &PullOptions::default(),
    );
    assert_eq!(out.blobs_fetched, 0);
    assert_eq!(out.bytes_fetched, 0);
    assert!(!out.new);
    assert_eq!(queued(&ev), 0);
    assert_eq!(ev.count(|e| matches!(e, PullEvent::LayerExists { .. })), 1);
    assert!(ev.all().contains(&PullEvent::Done {
        image_id: out.image_id.clone(),
        digest: out.digest.clone(),
        new: false
    }));
}

#[test]
fn pulling_web_after_busybox_fetches_one_layer() {
    let fx = fixture();
    let env = Env::new();
    pull(
        &env,
        &fx.reference("busybox:latest"),
        &PullOptions::default(),
    );
    let (out, ev) = pull(&env, &fx.reference("web:latest"), &PullOptions::default());
    let web = fx.image("web:latest");
    assert_eq!(out.image_id.to_string(), web.config_digest);
    assert_eq!(queued(&ev), 1, "only the www layer");
    assert_eq!(out.blobs_fetched, 2, "config + www layer");
    let record = env
        .images
        .store
        .resolve(&fx.reference("web:latest"))
        .unwrap();
    let top = env.sink.layer_dir(record.chain_ids()[1].hex());
    assert_eq!(
        fs::read_to_string(top.join("www/index.html")).unwrap(),
        berth_testkit::image::WEB_INDEX_HTML
    );
}

#[test]
fn pull_by_digest_and_docker_schema2() {
    let fx = fixture();
    let env = Env::new();
    let bb = fx.image("busybox:latest");
    let by_digest = format!("{}/busybox@{}", fx.registry, bb.manifest_digest);
    let (out, _) = pull(&env, &by_digest, &PullOptions::default());
    assert_eq!(out.image_id.to_string(), bb.config_digest);
    let d = env.images.store.inspect(&by_digest).unwrap();
    assert!(d.repo_tags.is_empty(), "a digest pull adds no tag");
    let v2 = fx.image("busybox:v2s2");
    let (out, ev) = pull(&env, &fx.reference("busybox:v2s2"), &PullOptions::default());
    assert_eq!(out.image_id.to_string(), v2.config_digest);
    assert_eq!(out.manifest.to_string(), v2.manifest_digest);
    assert_eq!(queued(&ev), 0, "same layer as the OCI image");
    let rec = env
        .images
        .store
        .resolve(&fx.reference("busybox:v2s2"))
        .unwrap();
    assert_eq!(
        rec.manifest_media_type,
        berth_registry_mirror::manifest::DOCKER_MANIFEST
    );
    // A digest that is not in the repository.
    let missing = format!("{}/busybox@sha256:{}", fx.registry, "0".repeat(64));
    let err = rt()
        .block_on(env.images.puller.pull(
            &Reference::parse(&missing).unwrap(),
            &PullOptions::default(),
            None,
            &|_| {},
        ))
        .unwrap_err();
    assert!(matches!(err, Error::ManifestNotFound { .. }), "{err}");
}

#[test]
fn multi_platform_index_and_manifest_list_select_amd64() {
    let fx = fixture();
    let env = Env::new();
    for tag in ["multi:latest", "multi:v2s2"] {
        let want = fx.image(tag);
        let (out, _) = pull(&env, &fx.reference(tag), &PullOptions::default());
        assert_eq!(out.image_id.to_string(), want.config_digest, "{tag}");
        assert_eq!(
            out.digest.to_string(),
            want.manifest_digest,
            "{tag}: index digest"
        );
        assert_eq!(
            out.manifest.to_string(),
            want.children[0],
            "{tag}: amd64 child"
        );
        let d = env.images.store.inspect(&fx.reference(tag)).unwrap();
        assert_eq!(d.architecture, "amd64");
    }
    let arm = PullOptions {
        platform: Platform::parse("linux/arm64/v8").unwrap(),
        ..PullOptions::default()
    };
    let (out, _) = pull(&env, &fx.reference("multi:latest"), &arm);
    assert_eq!(
        out.manifest.to_string(),
        fx.image("multi:latest").children[1]
    );
    let d = env.images.store.inspect(&out.image_id.to_string()).unwrap();
    assert_eq!(
        (d.architecture.as_str(), d.variant.as_deref()),
        ("arm64", Some("v8"))
    );
    let s390 = PullOptions {
        platform: Platform::parse("linux/s390x").unwrap(),
        ..PullOptions::default()
    };
    let err = rt()
        .block_on(env.images.puller.pull(
            &Reference::parse(&fx.reference("multi:latest")).unwrap(),
            &s390,
            None,
            &|_| {},
        ))
        .unwrap_err();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{err}");
}

#[test]
fn pull_big_streams_a_50_mib_layer() {
    let fx = fixture();
    let env = Env::new();
    let (out, ev) = pull(&env, &fx.reference("big:latest"), &PullOptions::default());
    let big = fx.image("big:latest");
    assert_eq!(out.image_id.to_string(), big.config_digest);
    let big_layer = &big.layers[1];
    let steps = ev.count(|e| matches!(e, PullEvent::LayerProgress { layer, .. } if layer.to_string() == big_layer.digest));
    assert!(
        steps > 50,
        "progress reported as it streams ({steps} events)"
    );
    let record = env
        .images
        .store
        .resolve(&fx.reference("big:latest"))
        .unwrap();
    let top = env.sink.layer_dir(record.chain_ids()[1].hex());
    assert_eq!(
        fs::metadata(top.join("data/random.bin")).unwrap().len(),
        berth_testkit::image::BIG_LAYER_BYTES as u64
    );
    assert!(env.images.store.blobs().fsck().unwrap().is_empty());
}

#[test]
fn concurrent_pulls_of_one_image_download_each_layer_once() {
    let fx = fixture();
    let env = Env::new();
    let r = Reference::parse(&fx.reference("web:latest")).unwrap();
    let (a, b) = (Events::default(), Events::default());
    let (ca, cb) = (a.callback(), b.callback());
    let opts = PullOptions::default();
    let (ra, rb) = rt().block_on(async {
        tokio::join!(
            env.images.puller.pull(&r, &opts, env.sink_dyn(), &ca),
            env.images.puller.pull(&r, &opts, env.sink_dyn(), &cb)
        )
    });
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.image_id, rb.image_id);
    let downloads = |e: &Events| e.count(|e| matches!(e, PullEvent::LayerVerifying { .. }));
    assert_eq!(
        downloads(&a) + downloads(&b),
        2,
        "two layers, each downloaded once in total"
    );
    assert!(env.images.store.blobs().fsck().unwrap().is_empty());
}

#[test]
fn push_retagged_image_is_seen_by_skopeo_with_matching_digests() {
    let fx = fixture();
    let env = Env::new();
    let (out, _) = pull(&env, &fx.reference("web:latest"), &PullOptions::default());
    let target = Reference::parse(&format!("{}/pushed/web-copy:v1", fx.registry)).unwrap();
    env.images
        .store
        .tag(&fx.reference("web:latest"), &target)
        .unwrap();
    let pushed = rt()
        .block_on(
            env.images
                .pusher
                .push(&target, &Default::default(), &|_| {}),
        )
        .unwrap();
    assert_eq!(pushed.manifest, out.manifest);
    assert_eq!(
        pushed.blobs_uploaded, 3,
        "a new repository: two layers and the config"
    );
    let o = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/pushed/web-copy:v1", fx.registry))
        .output()
        .expect("run skopeo");
    assert!(
        o.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Digest"], out.manifest.to_string());
    let web = fx.image("web:latest");
    let layers: Vec<String> = web.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(v["Layers"], serde_json::json!(layers));
    // Pushing again uploads nothing.
    let again = rt()
        .block_on(
            env.images
                .pusher
                .push(&target, &Default::default(), &|_| {}),
        )
        .unwrap();
    assert_eq!(again.blobs_uploaded, 0);
}

#[test]
fn save_remove_load_gives_the_same_image_id() {
    let fx = fixture();
    let env = Env::new();
    let name = fx.reference("web:latest");
    let (out, _) = pull(&env, &name, &PullOptions::default());
    let tar = env.dir.path().join("web.tar");
    archive::save(
        &env.images.store,
        std::slice::from_ref(&name),
        fs::File::create(&tar).unwrap(),
    )
    .unwrap();
    // Other tools read the archive: as a docker-archive and as an OCI layout.
    let diff_ids: Vec<String> = fx
        .image("web:latest")
        .layers
        .iter()
        .map(|l| l.diff_id.clone())
        .collect();
    for transport in ["docker-archive", "oci-archive"] {
        let o = std::process::Command::new("skopeo")
            .arg("inspect")
            .arg(format!("{transport}:{}", tar.display()))
            .output()
            .expect("run skopeo");
        assert!(
            o.status.success(),
            "skopeo {transport}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["Layers"], serde_json::json!(diff_ids), "{transport}");
    }
    let report = env.images.store.remove(&name, false, &|_| false).unwrap();
    assert_eq!(report.deleted, vec![out.image_id.clone()]);
    assert_eq!(report.unused_chain_ids.len(), 2);
    assert!(matches!(
        env.images.store.resolve(&name),
        Err(Error::ImageNotFound { .. })
    ));
    assert!(
        env.images.store.blobs().list().unwrap().is_empty(),
        "blobs of the image removed"
    );
    // A fresh data root loads it too.
    let fresh = Env::new();
    for e in [&env, &fresh] {
        let sink = e.sink.clone();
        let loaded =
            archive::load(&e.images.store, fs::File::open(&tar).unwrap(), Some(&*sink)).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, out.image_id);
        assert_eq!(loaded[0].tags, vec![name.clone()]);
        let d = e.images.store.inspect(&name).unwrap();
        assert_eq!(d.id, out.image_id);
        assert_eq!(d.rootfs_layers.len(), 2);
        let top = e.sink.layer_dir(d.record.chain_ids()[1].hex());
        assert!(top.join("www/index.html").is_file());
    }
}

#[test]
fn tag_untag_remove_in_use_and_persistence() {
    let fx = fixture();
    let mut env = Env::new();
    let name = fx.reference("busybox:latest");
    let (out, _) = pull(&env, &name, &PullOptions::default());
    let id = out.image_id.clone();
    let alias = Reference::parse("mybox:1").unwrap();
    env.images.store.tag(&name, &alias).unwrap();
    // Reloaded on restart.
    env.reopen();
    let list = env.images.store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].repo_tags, vec![name.clone(), "mybox:1".to_string()]);
    assert!(list[0].size > 0);
    let by_short_id = env.images.store.resolve(&id.hex()[..12]).unwrap();
    assert_eq!(by_short_id.id, id);
    // By ID with two tags: refused without force.
    let err = env
        .images
        .store
        .remove(id.hex(), false, &|_| false)
        .unwrap_err();
    assert!(matches!(err, Error::ImageHasManyTags { .. }), "{err}");
    // Untag one name: the image stays.
    let r = env
        .images
        .store
        .remove("mybox:1", false, &|_| false)
        .unwrap();
    assert_eq!(r.untagged, vec!["mybox:1".to_string()]);
    assert!(r.deleted.is_empty());
    // In use: refused; forced: untagged but kept.
    let err = env
        .images
        .store
        .remove(&name, false, &|i| *i == id)
        .unwrap_err();
    assert!(matches!(err, Error::ImageInUse { .. }), "{err}");
    let r = env.images.store.remove(&name, true, &|i| *i == id).unwrap();
    assert!(r.deleted.is_empty());
    assert!(env.images.store.resolve(id.hex()).is_ok());
    // Not in use any more: deleted, and GC has nothing left to collect.
    let r = env
        .images
        .store
        .remove(id.hex(), false, &|_| false)
        .unwrap();
    assert_eq!(r.deleted, vec![id]);
    assert!(env.images.store.gc().unwrap().removed.is_empty());
    env.reopen();
    assert!(env.images.store.list().unwrap().is_empty());
}

#[test]
fn import_rootfs_tar_as_one_layer_image() {
    let env = Env::new();
    let tar = raw_tar(&[
        ("etc/", tar::EntryType::Directory, None, b""),
        ("etc/hostname", tar::EntryType::Regular, None, b"imported\n"),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let r = Reference::parse("imported:v1").unwrap();
    let sink = env.sink.clone();
    let img = archive::import(&env.images.store, &gz[..], Some(&r), Some(&*sink)).unwrap();
    assert_eq!(img.tags, vec!["imported:v1".to_string()]);
    let d = env.images.store.inspect("imported:v1").unwrap();
    assert_eq!(d.rootfs_layers, vec![sha256(&tar).parse().unwrap()]);
    assert_eq!(d.size, tar.len() as u64);
    let dir = env.sink.layer_dir(d.record.chain_ids()[0].hex());
    assert_eq!(fs::read(dir.join("etc/hostname")).unwrap(), b"imported\n");
}
