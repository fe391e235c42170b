//! The test fixture serves what it claims: manifests and blobs from a real registry whose
//! digests match the fixture description and the bytes themselves.

use anyhow::Result;
use berth_testkit::image::{sha256_digest, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX};
use berth_testkit::registry::Pusher;
use berth_testkit::Fixture;

const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

#[test]
fn busybox_manifest_and_layer_digests_match() -> Result<()> {
    let fx = Fixture::from_env()?;
    let reg = Pusher::new(&fx.registry);
    let want = fx.image("busybox:latest");

    let (manifest, header_digest) = reg.get("/v2/busybox/manifests/latest", ACCEPT_ALL)?;
    assert_eq!(sha256_digest(&manifest), want.manifest_digest);
    assert_eq!(
        header_digest.as_deref(),
        Some(want.manifest_digest.as_str())
    );

    let m: serde_json::Value = serde_json::from_slice(&manifest)?;
    assert_eq!(m["config"]["digest"], want.config_digest.as_str());
    let layer = m["layers"][0]["digest"].as_str().expect("layer digest");
    assert_eq!(layer, want.layers[0].digest);

    let (blob, _) = reg.get(&format!("/v2/busybox/blobs/{layer}"), "*/*")?;
    assert_eq!(sha256_digest(&blob), layer);
    assert_eq!(blob.len() as u64, want.layers[0].size);

    // The layer holds a runnable shell and the applet links.
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    let names: Vec<String> = archive
        .entries()?
        .map(|e| Ok(e?.path()?.display().to_string()))
        .collect::<Result<_>>()?;
    for want in [
        "bin/busybox",
        "bin/sh",
        "bin/httpd",
        "etc/passwd",
        "etc/group",
        "tmp/",
    ] {
        assert!(names.iter().any(|n| n == want), "layer lacks {want}");
    }
    Ok(())
}

#[test]
fn every_fixture_image_is_served_with_its_media_type() -> Result<()> {
    let fx = Fixture::from_env()?;
    let reg = Pusher::new(&fx.registry);
    for (repo_tag, info) in &fx.images {
        let (repo, tag) = repo_tag.split_once(':').expect("repo:tag");
        let (body, digest) = reg.get(&format!("/v2/{repo}/manifests/{tag}"), ACCEPT_ALL)?;
        assert_eq!(sha256_digest(&body), info.manifest_digest, "{repo_tag}");
        assert_eq!(digest.as_deref(), Some(info.manifest_digest.as_str()));
        let m: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(m["mediaType"], info.media_type.as_str(), "{repo_tag}");
    }
    assert_eq!(fx.image("busybox:v2s2").media_type, DOCKER_MANIFEST);
    assert_eq!(fx.image("multi:latest").media_type, OCI_INDEX);
    assert_eq!(fx.image("multi:v2s2").media_type, DOCKER_MANIFEST_LIST);
    assert_eq!(fx.image("web:latest").layers.len(), 2);
    let big = fx.image("big:latest");
    assert!(
        big.layers[1].size > 50 * 1024 * 1024,
        "big layer is ~50 MiB"
    );
    Ok(())
}

#[test]
fn index_offers_amd64_and_a_second_platform() -> Result<()> {
    let fx = Fixture::from_env()?;
    let reg = Pusher::new(&fx.registry);
    let (body, _) = reg.get("/v2/multi/manifests/latest", ACCEPT_ALL)?;
    let idx: serde_json::Value = serde_json::from_slice(&body)?;
    let platforms: Vec<String> = idx["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or(""),
                m["platform"]["architecture"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    // The amd64 entry is the busybox image itself.
    assert_eq!(
        idx["manifests"][0]["digest"],
        fx.image("busybox:latest").manifest_digest.as_str()
    );
    Ok(())
}
