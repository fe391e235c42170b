//! The shim's single-threaded event loop (adapter: nix, libc, libcontainer through `oci`).

use std::fs::File;
use std::io::{ErrorKind, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cgroups;
use crate::error::{Result, RuntimeError};
use crate::logs::{LineSplitter, LogRecord, Stream};
use crate::oci::{self, Stdio};
use crate::protocol::{
    self, kind, ExitRecord, ExitStatus, FrameDecoder, Ready, Request, Response, ShimConfig,
    ShimTask, RECORD_VERSION,
};

/// No output is read while an attached client has this much unsent: the process then
/// blocks on its full pipe (backpressure) instead of output being dropped.
const CLIENT_HIGH_WATER: usize = 1 << 20;
/// No stdin is read from clients while this much waits for the process to read it.
const STDIN_HIGH_WATER: usize = 1 << 20;
/// After the process exits, how long output may stay silent (held open by a leftover
/// process) before the shim stops draining it.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

fn sys(call: &'static str) -> impl FnOnce(nix::Error) -> RuntimeError {
    move |source| RuntimeError::Sys { call, source }
}

/// Forks; the parent returns `Ok(true)` and should exit, the child `Ok(false)` after
/// `setsid`, in a new session without a controlling terminal.
pub(super) fn detach() -> Result<bool> {
    // SAFETY: the shim is single-threaded at this point (no runtime, no helper threads have
    // been started), so the child may safely continue running arbitrary code.
    match unsafe { nix::unistd::fork() }.map_err(sys("fork"))? {
        nix::unistd::ForkResult::Parent { .. } => Ok(true),
        nix::unistd::ForkResult::Child => {
            nix::unistd::setsid().map_err(sys("setsid"))?;
            Ok(false)
        }
    }
}

/// Runs the shim to completion; returns the process exit code.
pub(super) fn run(cfg: ShimConfig) -> i32 {
    let mut starter = std::io::stdout();
    match Supervisor::start(cfg) {
        Ok(mut sup) => {
            let _ = protocol::write_line(
                &mut starter,
                &Ready::Started {
                    pid: sup.pid,
                    shim_pid: std::process::id() as i32,
                },
            );
            silence_stdio();
            sup.serve();
            0
        }
        Err(e) => {
            let _ = protocol::write_line(
                &mut starter,
                &Ready::Failed {
                    message: e.to_string(),
                },
            );
            1
        }
    }
}

/// Points fds 0 and 1 at /dev/null so the starter's pipe closes (fd 2 is the shim's own
/// diagnostics file, opened by the starter).
fn silence_stdio() {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for fd in 0..2 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd we own with F_GETFL/F_SETFL has no memory effects.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

fn pipe() -> Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
    Ok((File::from(r), File::from(w)))
}

/// Sets the window size of a pty master.
fn resize(master: &File, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which points to a live local.
    unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCSWINSZ,
            &ws as *const libc::winsize,
        );
    }
}

/// Moves the shim into a mount namespace of its own (host mounts still propagate in, ours do
/// not propagate out) and mounts the container's rootfs there. The mount goes away with the
/// last process of that namespace, so the host never needs an unmount.
fn private_rootfs_mount(plan: &crate::snapshot::MountPlan) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(sys("unshare(CLONE_NEWNS)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(sys("make / rslave"))?;
    crate::snapshot::Mounter::mount(&crate::snapshot::SysMounter, plan)
}

/// Accepts the console socket connection libcontainer makes and receives the pty master.
fn receive_pty_master(listener: &UnixListener) -> Result<File> {
    let deadline = Instant::now() + Duration::from_secs(10);
    listener
        .set_nonblocking(true)
        .map_err(|e| RuntimeError::io("set nonblocking", "console socket", e))?;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(RuntimeError::io("accept", "console socket", e)),
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| RuntimeError::io("set blocking", "console socket", e))?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sys("recvmsg"))?;
    for cmsg in msg.cmsgs().map_err(sys("cmsgs"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this fd in our table for us; nothing
                // else owns it.
                return Ok(unsafe { File::from_raw_fd(*fd) });
            }
        }
    }
    Err(RuntimeError::Protocol {
        detail: "console socket message carried no fd",
    })
}

#[derive(Debug)]
enum Phase {
    Request(Vec<u8>),
    Attached {
        stdin: bool,
        stdout: bool,
        stderr: bool,
        decoder: FrameDecoder,
    },
    Waiting,
    Closing,
}

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    phase: Phase,
    out: Vec<u8>,
    dead: bool,
}

impl Client {
    fn queue_response(&mut self, r: &Response) {
        let _ = protocol::write_line(&mut self.out, r);
    }

    /// Writes what the socket takes; true if anything was written.
    fn flush(&mut self) -> bool {
        let mut wrote = false;
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => {
                    self.dead = true;
                    return wrote;
                }
                Ok(n) => {
                    self.out.drain(..n);
                    wrote = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return wrote,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.dead = true;
                    return wrote;
                }
            }
        }
        if matches!(self.phase, Phase::Closing) {
            self.dead = true;
        }
        wrote
    }
}

struct Output {
    file: File,
    kind: u8,
}

struct Supervisor {
    cfg: ShimConfig,
    pid: i32,
    listener: UnixListener,
    sigchld: UnixStream,
    outputs: Vec<Output>,
    /// Pipe write end, or the pty master.
    stdin: Option<File>,
    stdin_buf: Vec<u8>,
    close_stdin_when_flushed: bool,
    master: Option<File>,
    log: Option<File>,
    /// Whether this shim appended anything to `log` (only then is there something to sync).
    log_written: bool,
    splitters: [LineSplitter; 2],
    clients: Vec<Client>,
    /// Attach clients still expected before output is read (see
    /// [`ShimConfig::hold_output_for`]), and until when they are waited for.
    hold: u32,
    hold_until: Instant,
    /// When output last moved (read, or held back on purpose): drain grace runs from here.
    last_output: Instant,
    exit: Option<ExitStatus>,
    exited_at: Option<Instant>,
    /// The process exited and all of its output is in the log (drained, last partial
    /// lines written, synced). Only then is a `Wait` answered: whoever waits for the exit
    /// may read the complete log right after.
    output_done: bool,
}

impl Supervisor {
    fn start(cfg: ShimConfig) -> Result<Self> {
        let _ = nix::unistd::chdir("/");
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        // SAFETY: ignoring SIGPIPE installs no handler code; writes to closed sockets then
        // fail with EPIPE instead of killing the shim.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let (sig_r, sig_w) =
            UnixStream::pair().map_err(|e| RuntimeError::io("socketpair", "sigchld", e))?;
        sig_r
            .set_nonblocking(true)
            .map_err(|e| RuntimeError::io("set nonblocking", "sigchld", e))?;
        sig_w
            .set_nonblocking(true)
            .map_err(|e| RuntimeError::io("set nonblocking", "sigchld", e))?;
        signal_hook::low_level::pipe::register(libc::SIGCHLD, sig_w)
            .map_err(|e| RuntimeError::io("register", "SIGCHLD", e))?;

        write_atomic(
            &cfg.pid_file,
            format!("{}\n", std::process::id()).as_bytes(),
        )?;
        let _ = std::fs::remove_file(&cfg.socket);
        let listener = UnixListener::bind(&cfg.socket)
            .map_err(|e| RuntimeError::io("bind", &cfg.socket, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| RuntimeError::io("set nonblocking", &cfg.socket, e))?;

        let log = match &cfg.log_file {
            Some(p) => Some(
                File::options()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| RuntimeError::io("open", p, e))?,
            ),
            None => None,
        };

        let console_path = cfg.socket.with_extension("console");
        let mut outputs = Vec::new();
        let mut stdin = None;
        let mut master = None;
        let mut stdio = Stdio::default();
        let console_listener = if cfg.tty {
            let _ = std::fs::remove_file(&console_path);
            Some(
                UnixListener::bind(&console_path)
                    .map_err(|e| RuntimeError::io("bind", &console_path, e))?,
            )
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            outputs.push(Output {
                file: out_r,
                kind: kind::STDOUT,
            });
            outputs.push(Output {
                file: err_r,
                kind: kind::STDERR,
            });
            stdio.stdout = Some(OwnedFd::from(out_w));
            stdio.stderr = Some(OwnedFd::from(err_w));
            if cfg.open_stdin {
                let (in_r, in_w) = pipe()?;
                stdin = Some(in_w);
                stdio.stdin = Some(OwnedFd::from(in_r));
            } else {
                let null = File::open("/dev/null")
                    .map_err(|e| RuntimeError::io("open", "/dev/null", e))?;
                stdio.stdin = Some(OwnedFd::from(null));
            }
            None
        };
        let console = console_listener.as_ref().map(|_| console_path.as_path());

        let created = match &cfg.task {
            ShimTask::Init { bundle } => {
                // A crashed earlier run may have left libcontainer state behind.
                let _ = oci::delete(&cfg.id, &cfg.state_root, true);
                match &cfg.rootfs_mount {
                    Some(plan) => private_rootfs_mount(plan),
                    None => Ok(()),
                }
                .and_then(|()| oci::create_init(&cfg.id, &cfg.state_root, bundle, stdio, console))
            }
            ShimTask::Exec { process, .. } => {
                oci::exec(&cfg.id, &cfg.state_root, process, stdio, console)
            }
        };
        let pid = match created {
            Ok(pid) => pid,
            Err(e) => {
                let _ = std::fs::remove_file(&cfg.socket);
                let _ = std::fs::remove_file(&console_path);
                return Err(e);
            }
        };
        if let Some(l) = &console_listener {
            let m = receive_pty_master(l);
            let _ = std::fs::remove_file(&console_path);
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    let _ = oci::delete(&cfg.id, &cfg.state_root, true);
                    return Err(e);
                }
            };
            resize(&m, 24, 80);
            let reader = m
                .try_clone()
                .map_err(|e| RuntimeError::io("dup", "pty master", e))?;
            let writer = m
                .try_clone()
                .map_err(|e| RuntimeError::io("dup", "pty master", e))?;
            outputs.push(Output {
                file: reader,
                kind: kind::STDOUT,
            });
            stdin = Some(writer);
            master = Some(m);
        }
        if let ShimTask::Init { .. } = cfg.task {
            if let Err(e) = oci::start(&cfg.id, &cfg.state_root) {
                let _ = oci::delete(&cfg.id, &cfg.state_root, true);
                let _ = std::fs::remove_file(&cfg.socket);
                return Err(e);
            }
        }
        for o in &outputs {
            set_nonblocking(o.file.as_raw_fd());
        }
        if let Some(s) = &stdin {
            set_nonblocking(s.as_raw_fd());
        }
        let hold = cfg.hold_output_for;
        Ok(Supervisor {
            cfg,
            pid,
            listener,
            sigchld: sig_r,
            outputs,
            stdin,
            stdin_buf: Vec::new(),
            close_stdin_when_flushed: false,
            master,
            log,
            log_written: false,
            splitters: [LineSplitter::default(), LineSplitter::default()],
            clients: Vec::new(),
            hold,
            hold_until: Instant::now() + Duration::from_secs(protocol::HOLD_LIMIT_SECS),
            last_output: Instant::now(),
            exit: None,
            exited_at: None,
            output_done: false,
        })
    }

    fn serve(&mut self) {
        loop {
            self.reap();
            self.answer_waiters();
            if self.output_paused() {
                self.last_output = Instant::now();
            }
            if self.exited_at.is_some() {
                // Every byte is read up to end of file; only output held open by a leftover
                // process that stays silent for the grace period is given up on.
                let drained = self.outputs.is_empty() || self.last_output.elapsed() > DRAIN_GRACE;
                if drained && !self.output_done {
                    self.complete_output();
                }
                // Attached clients get their output before the connections close.
                let unsent = self
                    .clients
                    .iter()
                    .any(|c| matches!(c.phase, Phase::Attached { .. }) && !c.out.is_empty());
                if drained && (!unsent || self.last_output.elapsed() > DRAIN_GRACE) {
                    break;
                }
            }
            self.poll_once();
        }
        self.finish();
    }

    fn poll_once(&mut self) {
        // Index layout: 0 sigchld, 1 listener, then outputs, then stdin, then clients.
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let pfd = |fd: RawFd, events: libc::c_short| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        fds.push(pfd(self.sigchld.as_raw_fd(), libc::POLLIN));
        fds.push(pfd(self.listener.as_raw_fd(), libc::POLLIN));
        let paused = self.output_paused();
        for o in &self.outputs {
            fds.push(if paused {
                pfd(-1, 0)
            } else {
                pfd(o.file.as_raw_fd(), libc::POLLIN)
            });
        }
        let stdin_idx = fds.len();
        match (&self.stdin, self.stdin_buf.is_empty()) {
            (Some(s), false) => fds.push(pfd(s.as_raw_fd(), libc::POLLOUT)),
            _ => fds.push(pfd(-1, 0)),
        }
        let clients_idx = fds.len();
        let stdin_full = self.stdin_buf.len() >= STDIN_HIGH_WATER;
        for c in &self.clients {
            // Backpressure on a client's stdin: its frames wait in the socket.
            let feeding = matches!(c.phase, Phase::Attached { stdin: true, .. });
            let mut ev = if feeding && stdin_full {
                0
            } else {
                libc::POLLIN
            };
            if !c.out.is_empty() {
                ev |= libc::POLLOUT;
            }
            fds.push(pfd(c.stream.as_raw_fd(), ev));
        }
        let timeout = if self.exited_at.is_some() || self.hold > 0 {
            100
        } else {
            1000
        };
        // SAFETY: `fds` is a live, correctly sized array of pollfd for the duration of the
        // call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n <= 0 {
            return;
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 64];
            while matches!((&self.sigchld).read(&mut buf), Ok(n) if n > 0) {}
        }
        if fds[1].revents != 0 {
            self.accept_clients();
        }
        let ready: Vec<bool> = fds[2..stdin_idx].iter().map(|p| p.revents != 0).collect();
        let mut closed = Vec::new();
        for (i, r) in ready.into_iter().enumerate() {
            if r && !self.read_output(i) {
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            self.outputs.remove(i);
        }
        if fds[stdin_idx].revents != 0 {
            self.flush_stdin();
        }
        let client_events: Vec<libc::c_short> =
            fds[clients_idx..].iter().map(|p| p.revents).collect();
        for (i, ev) in client_events.into_iter().enumerate() {
            if i >= self.clients.len() {
                break;
            }
            if ev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                self.read_client(i);
            }
            if ev & libc::POLLOUT != 0 && self.clients[i].flush() {
                self.last_output = Instant::now();
            }
        }
        self.clients.retain(|c| !c.dead);
    }

    /// Whether output is left unread for now: attach clients are still expected, or one
    /// that is attached has too much unsent.
    fn output_paused(&self) -> bool {
        (self.hold > 0 && Instant::now() < self.hold_until)
            || self.clients.iter().any(|c| {
                matches!(c.phase, Phase::Attached { .. }) && c.out.len() >= CLIENT_HIGH_WATER
            })
    }

    fn accept_clients(&mut self) {
        while let Ok((s, _)) = self.listener.accept() {
            if s.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    stream: s,
                    phase: Phase::Request(Vec::new()),
                    out: Vec::new(),
                    dead: false,
                });
            }
        }
    }

    /// Reads one chunk of output; false at end of stream.
    fn read_output(&mut self, i: usize) -> bool {
        let mut buf = vec![0u8; 64 * 1024];
        let kind = self.outputs[i].kind;
        match self.outputs[i].file.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.last_output = Instant::now();
                self.dispatch_output(kind, &buf[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                true
            }
            // EIO on a pty master once every slave is closed.
            Err(_) => false,
        }
    }

    fn dispatch_output(&mut self, kind: u8, data: &[u8]) {
        let idx = if kind == kind::STDERR { 1 } else { 0 };
        if self.log.is_some() {
            let lines = self.splitters[idx].push(data);
            self.write_log(idx, lines);
        }
        let frame = protocol::encode_frame(kind, data);
        for c in &mut self.clients {
            if let Phase::Attached { stdout, stderr, .. } = c.phase {
                let wants = if kind == kind::STDERR { stderr } else { stdout };
                if wants {
                    c.out.extend_from_slice(&frame);
                    c.flush();
                }
            }
        }
    }

    fn write_log(&mut self, idx: usize, lines: Vec<Vec<u8>>) {
        let Some(log) = &mut self.log else { return };
        let stream = if idx == 1 {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        let mut buf = Vec::new();
        for l in lines {
            let rec = LogRecord {
                time: Utc::now(),
                stream,
                log: String::from_utf8_lossy(&l).into_owned(),
            };
            buf.extend(rec.to_line());
        }
        if !buf.is_empty() {
            let _ = log.write_all(&buf);
            self.log_written = true;
        }
    }

    fn flush_stdin(&mut self) {
        if let Some(s) = &mut self.stdin {
            while !self.stdin_buf.is_empty() {
                match s.write(&self.stdin_buf) {
                    Ok(n) if n > 0 => {
                        self.stdin_buf.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    _ => {
                        // The reader is gone.
                        self.stdin_buf.clear();
                        self.stdin = None;
                        return;
                    }
                }
            }
        }
        if self.close_stdin_when_flushed && self.master.is_none() {
            self.stdin = None;
        }
    }

    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 16 * 1024];
        let n = match self.clients[i].stream.read(&mut buf) {
            Ok(0) => {
                self.clients[i].dead = true;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                return
            }
            Err(_) => {
                self.clients[i].dead = true;
                return;
            }
        };
        let data = &buf[..n];
        match &mut self.clients[i].phase {
            Phase::Request(pending) => {
                pending.extend_from_slice(data);
                if let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                    let rest = pending.split_off(pos + 1);
                    let line = std::mem::take(pending);
                    match serde_json::from_slice::<Request>(&line) {
                        Ok(req) => self.handle_request(i, req, &rest),
                        Err(e) => {
                            let c = &mut self.clients[i];
                            c.queue_response(&Response::Error {
                                message: format!("bad request: {e}"),
                            });
                            c.phase = Phase::Closing;
                            c.flush();
                        }
                    }
                } else if pending.len() > 64 * 1024 {
                    self.clients[i].dead = true;
                }
            }
            Phase::Attached { decoder, .. } => {
                decoder.push(data);
                self.handle_frames(i);
            }
            Phase::Waiting | Phase::Closing => {}
        }
    }

    fn handle_request(&mut self, i: usize, req: Request, rest: &[u8]) {
        let response = match req {
            Request::State => Response::State {
                pid: self.pid,
                exit: self.exit,
            },
            Request::Kill { signal, all } => match self.kill(signal, all) {
                Ok(()) => Response::Ok,
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            },
            Request::Resize { rows, cols } => match &self.master {
                Some(m) => {
                    resize(m, rows, cols);
                    Response::Ok
                }
                None => Response::Error {
                    message: "the process has no tty".into(),
                },
            },
            Request::Wait => match self.exit {
                Some(exit) if self.wait_answerable() => Response::Exited { exit },
                _ => {
                    self.clients[i].phase = Phase::Waiting;
                    return;
                }
            },
            Request::Attach {
                stdin,
                stdout,
                stderr,
            } => {
                if stdout || stderr {
                    self.hold = self.hold.saturating_sub(1);
                }
                let c = &mut self.clients[i];
                c.queue_response(&Response::Ok);
                let mut decoder = FrameDecoder::default();
                decoder.push(rest);
                c.phase = Phase::Attached {
                    stdin,
                    stdout,
                    stderr,
                    decoder,
                };
                c.flush();
                self.handle_frames(i);
                return;
            }
        };
        let c = &mut self.clients[i];
        c.queue_response(&response);
        c.phase = Phase::Closing;
        c.flush();
    }

    fn handle_frames(&mut self, i: usize) {
        loop {
            let Phase::Attached { stdin, decoder, .. } = &mut self.clients[i].phase else {
                return;
            };
            let may_write = *stdin;
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(_) => {
                    self.clients[i].dead = true;
                    return;
                }
            };
            match frame {
                (kind::STDIN, data) if may_write && self.stdin.is_some() => {
                    self.stdin_buf.extend_from_slice(&data);
                    self.flush_stdin();
                }
                (kind::STDIN_CLOSE, _) if may_write => {
                    self.close_stdin_when_flushed = true;
                    self.flush_stdin();
                }
                (kind::RESIZE, p) => {
                    if let (Some(m), Some((rows, cols))) =
                        (&self.master, protocol::parse_resize(&p))
                    {
                        resize(m, rows, cols);
                    }
                }
                _ => {}
            }
        }
    }

    fn kill(&self, signal: i32, all: bool) -> Result<()> {
        if self.exit.is_some() {
            return Err(RuntimeError::ShimRequest {
                id: self.cfg.id.clone(),
                message: "the process has already exited".into(),
            });
        }
        match self.cfg.task {
            ShimTask::Init { .. } => oci::kill(&self.cfg.id, &self.cfg.state_root, signal, all),
            ShimTask::Exec { .. } => {
                let sig = nix::sys::signal::Signal::try_from(signal).map_err(sys("signal"))?;
                nix::sys::signal::kill(Pid::from_raw(self.pid), sig).map_err(sys("kill"))
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == self.pid => {
                    self.record_exit(Some(code), None)
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == self.pid => {
                    self.record_exit(None, Some(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn record_exit(&mut self, code: Option<i32>, signal: Option<i32>) {
        let oom = matches!(self.cfg.task, ShimTask::Init { .. })
            && cgroups::oom_kills(&self.cfg.cgroups_path) > 0;
        self.exit = Some(ExitStatus::from_wait(code, signal, oom));
        self.exited_at = Some(Instant::now());
    }

    /// Writes the last partial lines, syncs the log and answers the waiters: once the
    /// process has exited and its output is drained.
    fn complete_output(&mut self) {
        for idx in 0..2 {
            if let Some(rest) = self.splitters[idx].finish() {
                self.write_log(idx, vec![rest]);
            }
        }
        // Only a log this run wrote to needs a sync: on a fresh, empty log file fdatasync
        // still forces a journal commit (0.5 ms idle, several ms under I/O load) on the path
        // between the container's exit and its exit record.
        if let (Some(log), true) = (&mut self.log, self.log_written) {
            let _ = log.sync_data();
        }
        self.output_done = true;
        self.answer_waiters();
    }

    /// Whether a `Wait` may be answered: the process has exited and its output is complete
    /// (all in the log, for an init). An exec's output is not logged: while it is held for
    /// an attacher that has not come, its exit is known all the same.
    fn wait_answerable(&self) -> bool {
        self.exit.is_some()
            && (self.output_done
                || (matches!(self.cfg.task, ShimTask::Exec { .. }) && self.hold > 0))
    }

    fn answer_waiters(&mut self) {
        let Some(exit) = self.exit.filter(|_| self.wait_answerable()) else {
            return;
        };
        for c in &mut self.clients {
            if matches!(c.phase, Phase::Waiting) {
                c.queue_response(&Response::Exited { exit });
                c.phase = Phase::Closing;
                c.flush();
            }
        }
    }

    fn finish(&mut self) {
        if !self.output_done {
            self.complete_output();
        }
        if let ShimTask::Init { .. } = self.cfg.task {
            // Removes the cgroups and libcontainer's state; anything left is killed.
            self.remove_container();
            self.reap_all();
        }
        let exit = self
            .exit
            .unwrap_or_else(|| ExitStatus::from_wait(None, None, false));
        let record = ExitRecord {
            version: RECORD_VERSION,
            pid: self.pid,
            exit,
        };
        if let Ok(bytes) = serde_json::to_vec(&record) {
            let _ = write_atomic(&self.cfg.exit_file, &bytes);
        }
        let _ = std::fs::remove_file(&self.cfg.socket);
        // Everything the runtime relies on is done: from here the shim counts as gone.
        let _ = std::fs::remove_file(&self.cfg.pid_file);
        for c in &mut self.clients {
            if matches!(c.phase, Phase::Waiting) {
                c.queue_response(&Response::Exited { exit });
            }
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = c.stream.write_all(&c.out);
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        // Late connections made before the socket was removed: answer them too.
        while let Ok((mut s, _)) = self.listener.accept() {
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            if let Ok(req) = protocol::read_line::<Request>(&mut s) {
                let resp = match req {
                    Request::State => Response::State {
                        pid: self.pid,
                        exit: Some(exit),
                    },
                    _ => Response::Exited { exit },
                };
                let _ = protocol::write_line(&mut s, &resp);
            }
        }
    }

    /// What libcontainer's delete does for a container whose init has exited and that has
    /// no hooks (berth's specs have none): kill what is left in its cgroups, remove them and
    /// its state directory. Done directly because building libcontainer's cgroup manager
    /// alone costs more than the removal; libcontainer's delete remains the fallback when
    /// a cgroup will not go.
    fn remove_container(&self) {
        match cgroups::remove_dirs(&self.cfg.cgroups_path) {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(self.cfg.state_root.join(&self.cfg.id));
            }
            Err(e) => {
                eprintln!("berth-shim: removing cgroups of {}: {e}", self.cfg.id);
                let _ = oci::delete(&self.cfg.id, &self.cfg.state_root, true);
            }
        }
    }

    fn reap_all(&mut self) {
        while let Ok(st) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if st == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

/// Writes a file through a temporary and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| RuntimeError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io("rename", &tmp, e))
}
