//! A minimal HTTP/1.1 client for the Engine API over a unix socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

#[derive(Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn from_host(host: &str) -> Result<Self> {
        match host.strip_prefix("unix://") {
            Some(p) if !p.is_empty() => Ok(Client { socket: p.into() }),
            _ => bail!("unsupported host {host:?}: expected unix:///path"),
        }
    }

    /// GETs `path` and parses the JSON body; an error status becomes the API's message.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let mut s = UnixStream::connect(&self.socket).with_context(|| {
            format!(
                "cannot connect to berthd at {}: is it running?",
                self.socket.display()
            )
        })?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nUser-Agent: berth-cli\r\n\r\n"
        )?;
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status)?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("malformed HTTP status line")?;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("transfer-encoding") && v.trim() == "chunked" {
                    chunked = true;
                }
            }
        }
        let body = if chunked {
            read_chunked(&mut r)?
        } else {
            let mut b = Vec::new();
            r.read_to_end(&mut b)?;
            b
        };
        let v: serde_json::Value = serde_json::from_slice(&body).context("response is not JSON")?;
        if code >= 400 {
            bail!(
                "Error response from daemon: {}",
                v["message"].as_str().unwrap_or("unknown error")
            );
        }
        Ok(v)
    }
}

fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size)?;
        let n = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk)?;
        chunk.truncate(n);
        out.extend_from_slice(&chunk);
    }
}
