//! Single-flight downloads: one upstream fetch per uncached digest, however many clients
//! ask for it, each streamed the bytes as they land on disk.
//!
//! ```text
//!  upstream --chunks--> [download task] --write+flush--> ingest/<hex>.part ----+
//!                          | written += n (watch channel)                     | pread
//!                          v                                                  v
//!                       verify digest -> fsync -> rename        waiter 1..N: read [offset, written)
//!                          | verified, Done / Failed(error)     (the last byte only once verified:
//!                          v                                     a bad blob always ends in an error)
//! ```
//!
//! A waiter that joins late reads what is already on disk, then follows. The read handle
//! is opened on the partial file before the first byte is written, so the rename on commit
//! (or the removal on a digest mismatch) does not disturb readers.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::watch;

use crate::digest::Digest;
use crate::error::Error;

/// Where a download is.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Waiting for the store lock or for upstream's response headers.
    Starting,
    /// Bytes are arriving; the partial file is readable.
    Streaming,
    /// Verified and committed (or found already stored).
    Done,
    /// Failed; nothing was cached.
    Failed(Arc<Error>),
}

/// The progress every waiter watches.
#[derive(Debug, Clone)]
pub struct FlightState {
    pub phase: Phase,
    /// Blob size, when upstream sent a Content-Length (or the blob was already stored).
    pub total: Option<u64>,
    /// Bytes written and flushed to the file so far.
    pub written: u64,
    /// All bytes arrived and hash to the digest (the commit to the store may still run).
    pub verified: bool,
}

/// One download in progress.
#[derive(Debug)]
pub struct Flight {
    pub digest: Digest,
    state: watch::Sender<FlightState>,
    file: OnceLock<Arc<File>>,
}

impl Flight {
    fn new(digest: Digest) -> Self {
        let (tx, _) = watch::channel(FlightState {
            phase: Phase::Starting,
            total: None,
            written: 0,
            verified: false,
        });
        Flight {
            digest,
            state: tx,
            file: OnceLock::new(),
        }
    }

    /// Sets the file waiters read from (the partial file, or the stored blob).
    pub fn set_file(&self, f: File) {
        let _ = self.file.set(Arc::new(f));
    }

    pub fn update(&self, f: impl FnOnce(&mut FlightState)) {
        self.state.send_modify(f);
    }

    pub fn state(&self) -> FlightState {
        self.state.borrow().clone()
    }

    /// Waits until bytes flow, the blob is done, or the download failed.
    pub async fn started(&self) -> FlightState {
        let mut rx = self.state.subscribe();
        loop {
            let st = rx.borrow_and_update().clone();
            if !matches!(st.phase, Phase::Starting) {
                return st;
            }
            // The sender lives in `self`: it cannot be dropped while we wait.
            let _ = rx.changed().await;
        }
    }

    /// The blob's bytes as they arrive, ending in an error if the download fails.
    /// `on_bytes` is called with the size of every chunk handed out.
    pub fn body(
        self: Arc<Self>,
        keep_alive: impl Send + Sync + 'static,
        on_bytes: impl Fn(u64) + Send + Sync + 'static,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        self.body_from(0, keep_alive, on_bytes)
    }

    /// [`Flight::body`] from byte `offset` on (a peer resuming a cut transfer).
    pub fn body_from(
        self: Arc<Self>,
        offset: u64,
        keep_alive: impl Send + Sync + 'static,
        on_bytes: impl Fn(u64) + Send + Sync + 'static,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        struct Reader<K, F> {
            flight: Arc<Flight>,
            rx: watch::Receiver<FlightState>,
            offset: u64,
            _keep: K,
            on_bytes: F,
        }
        let rx = self.state.subscribe();
        let reader = Reader {
            flight: self,
            rx,
            offset,
            _keep: keep_alive,
            on_bytes,
        };
        futures::stream::unfold(Some(reader), |r| async move {
            let mut r = r?;
            loop {
                let st = r.rx.borrow_and_update().clone();
                let readable = match &st.phase {
                    Phase::Failed(e) => {
                        let err = io::Error::other(format!("upstream download failed: {e}"));
                        return Some((Err(err), None));
                    }
                    Phase::Done => st.written,
                    _ if st.verified => st.written,
                    // Hold the last byte back until the digest is verified.
                    _ => st.written.saturating_sub(1),
                };
                if r.offset < readable {
                    let Some(file) = r.flight.file.get().cloned() else {
                        let err = io::Error::other("blob download has no readable file");
                        return Some((Err(err), None));
                    };
                    let len = (readable - r.offset).min(256 * 1024) as usize;
                    let off = r.offset;
                    let read = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; len];
                        file.read_exact_at(&mut buf, off).map(|_| buf)
                    })
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)));
                    return match read {
                        Ok(buf) => {
                            r.offset += buf.len() as u64;
                            (r.on_bytes)(buf.len() as u64);
                            Some((Ok(Bytes::from(buf)), Some(r)))
                        }
                        Err(e) => Some((Err(e), None)),
                    };
                }
                if matches!(st.phase, Phase::Done) || st.verified {
                    return None;
                }
                // The sender lives in the flight we hold: `changed` cannot fail for good.
                if r.rx.changed().await.is_err() {
                    return Some((Err(io::Error::other("blob download vanished")), None));
                }
            }
        })
    }
}

/// The downloads in progress, by digest.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<Digest, Arc<Flight>>>,
}

impl Flights {
    /// The flight for `d`, and whether the caller created it (and must run it).
    pub fn join_or_start(&self, d: &Digest) -> (Arc<Flight>, bool) {
        let mut m = self.map.lock().expect("flights");
        if let Some(f) = m.get(d) {
            return (f.clone(), false);
        }
        let f = Arc::new(Flight::new(d.clone()));
        m.insert(d.clone(), f.clone());
        (f, true)
    }

    /// A running flight for `d`, if any.
    pub fn get(&self, d: &Digest) -> Option<Arc<Flight>> {
        self.map.lock().expect("flights").get(d).cloned()
    }

    /// Removes the finished flight of `d` (new requests then go to the store).
    pub fn finish(&self, d: &Digest) {
        self.map.lock().expect("flights").remove(d);
    }

    /// Digests being downloaded (eviction leaves them alone).
    pub fn digests(&self) -> Vec<Digest> {
        self.map.lock().expect("flights").keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::io::Write;

    #[tokio::test]
    async fn waiters_follow_the_writer_and_see_the_last_byte_only_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("part");
        let mut w = File::create(&p).unwrap();
        let flight = Arc::new(Flight::new(Digest::of(b"abcdef")));
        flight.set_file(File::open(&p).unwrap());
        flight.update(|s| s.phase = Phase::Streaming);
        let mut body = Box::pin(flight.clone().body((), |_| {}));
        w.write_all(b"abc").unwrap();
        flight.update(|s| s.written = 3);
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"ab");
        w.write_all(b"def").unwrap();
        flight.update(|s| s.written = 6);
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"cde");
        // A late joiner reads what is on disk.
        let mut late = Box::pin(flight.clone().body((), |_| {}));
        assert_eq!(&late.next().await.unwrap().unwrap()[..], b"abcde");
        // Verified (the commit may still run): the last byte goes out and bodies end.
        flight.update(|s| s.verified = true);
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"f");
        assert!(body.next().await.is_none());
        flight.update(|s| s.phase = Phase::Done);
        assert_eq!(&late.next().await.unwrap().unwrap()[..], b"f");
        assert!(late.next().await.is_none());
    }

    #[tokio::test]
    async fn a_failed_download_ends_every_body_in_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("part");
        std::fs::write(&p, b"xy").unwrap();
        let flight = Arc::new(Flight::new(Digest::of(b"xy")));
        flight.set_file(File::open(&p).unwrap());
        flight.update(|s| {
            s.phase = Phase::Streaming;
            s.written = 2;
        });
        let mut body = Box::pin(flight.clone().body((), |_| {}));
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"x");
        flight.update(|s| {
            s.phase = Phase::Failed(Arc::new(Error::DigestMismatch {
                what: "blob",
                expected: Digest::of(b"xy"),
                actual: Digest::of(b"zz"),
            }))
        });
        assert!(body.next().await.unwrap().is_err());
        assert!(body.next().await.is_none());
    }
}
