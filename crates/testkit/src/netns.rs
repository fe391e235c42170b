//! Reaching the host's loopback from inside a test network namespace: a TCP forwarder whose
//! listener lives in the namespace and whose upstream sockets live in the host's.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};

/// Forwards `addr` inside a namespace to the same `addr` on the host; stops on drop.
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<AtomicBool>,
}

/// Binds `addr` inside the namespace at `netns` (from a short-lived thread, so no other
/// thread changes namespace).
fn bind_in(netns: &Path, addr: &str) -> Result<TcpListener> {
    let netns = netns.to_path_buf();
    let addr = addr.to_string();
    std::thread::spawn(move || -> Result<TcpListener> {
        let f = std::fs::File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
        setns(f.as_fd(), CloneFlags::CLONE_NEWNET).context("setns")?;
        let l = TcpListener::bind(&addr).with_context(|| format!("bind {addr} in netns"))?;
        Ok(l)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns bind thread panicked"))?
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Forwarder {
    pub fn start(netns: &Path, addr: &str) -> Result<Self> {
        let listener = bind_in(netns, addr)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let target = addr.to_string();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inner, _)) => {
                        let _ = inner.set_nonblocking(false);
                        let Ok(outer) = TcpStream::connect(&target) else {
                            continue;
                        };
                        let (Ok(inner2), Ok(outer2)) = (inner.try_clone(), outer.try_clone())
                        else {
                            continue;
                        };
                        std::thread::spawn(move || pump(inner, outer2));
                        std::thread::spawn(move || pump(outer, inner2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Forwarder { stop })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
