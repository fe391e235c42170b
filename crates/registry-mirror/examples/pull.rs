//! Pulls one image into a fresh data root and unpacks its layers, as berthd would; for
//! benchmarks (`bench/pull.sh`).
//!
//! `pull REFERENCE DATA_ROOT` — prints the image ID and the elapsed milliseconds.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use berth_registry_mirror::error::BoxError;
use berth_registry_mirror::{
    ClientConfig, Images, LayerRef, LayerSink, PullOptions, Reference, StagedLayer,
};

struct DirSink(PathBuf);

struct Staged(Option<PathBuf>, PathBuf);

impl StagedLayer for Staged {
    fn commit(mut self: Box<Self>) -> Result<(), BoxError> {
        std::fs::rename(self.0.take().expect("once"), &self.1)?;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

impl LayerSink for DirSink {
    fn is_unpacked(&self, layer: &LayerRef) -> bool {
        self.0.join(layer.chain_id.hex()).is_dir()
    }
    fn unpack(
        &self,
        layer: &LayerRef,
        tar: &mut dyn Read,
    ) -> Result<Box<dyn StagedLayer>, BoxError> {
        let tmp = self.0.join(format!(".tmp-{}", layer.chain_id.hex()));
        std::fs::create_dir_all(&tmp)?;
        let staged = Staged(Some(tmp.clone()), self.0.join(layer.chain_id.hex()));
        berth_runtime::unpack::unpack_layer(tar, &tmp)?;
        Ok(Box::new(staged))
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(args.len() == 2, "usage: pull REFERENCE DATA_ROOT");
    let root = PathBuf::from(&args[1]);
    let start = Instant::now();
    let rt = tokio::runtime::Runtime::new()?;
    let images = Images::open(&root, ClientConfig::default())?;
    let snapshots = root.join("snapshots");
    std::fs::create_dir_all(&snapshots)?;
    let sink: Arc<dyn LayerSink> = Arc::new(DirSink(snapshots));
    let r = Reference::parse(&args[0])?;
    let out = rt.block_on(
        images
            .puller
            .pull(&r, &PullOptions::default(), Some(sink), &|_| {}),
    )?;
    println!("{} {}", out.image_id, start.elapsed().as_millis());
    Ok(())
}
