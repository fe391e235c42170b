//! `docker login` / `logout` and private repositories, with real clients: the docker CLI
//! and docker-py against berthd, and Debian's docker-registry (the CNCF Distribution
//! registry) demanding HTTP Basic credentials from an htpasswd file with a bcrypt entry
//! (made by `htpasswd -B`, Debian's apache2-utils). The registry listens on the host's
//! loopback; berthd, in its own network namespace, reaches it through a forwarder at the
//! same address. Expected messages are dockerd 20.10's (observed against Debian's dockerd
//! with the same registry), except that berth asks for manifests with GET where dockerd
//! sends HEAD, so berth's "no basic auth credentials" names `Get "..."`.
//!
//! The Bearer token flow: the same registry with `auth: token`, whose realm is a small
//! token server kept with the tests (`tests/fixtures/token_server.py`, Debian's
//! python3-jwt and python3-cryptography): it issues the JWTs of the distribution token
//! specification, which the registry verifies against the server's certificate. The
//! token server is a test fixture standing in for Docker Hub's or Harbor's; the registry
//! that checks its tokens is the real one.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};
use berth_testkit::daemon::DockerEnv;
use berth_testkit::netns::Forwarder;
use berth_testkit::registry::RegistryProcess;

fn htpasswd(path: &Path, user: &str, password: &str) -> Result<()> {
    let out = Command::new("htpasswd")
        .args(["-B", "-b", "-c"])
        .arg(path)
        .args([user, password])
        .output()
        .context("run htpasswd (Debian's apache2-utils; tests/run.sh installs it)")?;
    if !out.status.success() {
        bail!("htpasswd: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line = std::fs::read_to_string(path)?;
    anyhow::ensure!(
        line.starts_with(&format!("{user}:$2y$")),
        "not bcrypt: {line}"
    );
    Ok(())
}

/// A private registry reachable by the test (host) and by berthd (its netns).
struct Private {
    env: DockerEnv,
    reg: RegistryProcess,
    _fwd: Forwarder,
    _token: Option<(TokenServer, Forwarder)>,
    _dir: tempfile::TempDir,
    password: String,
}

impl Private {
    fn start() -> Result<Self> {
        let env = DockerEnv::new()?;
        let dir = tempfile::tempdir()?;
        let password = format!("pw-{}-{}", std::process::id(), rand_suffix());
        let file = dir.path().join("htpasswd");
        htpasswd(&file, "alice", &password)?;
        let reg = RegistryProcess::start_with_htpasswd(&file)?;
        let fwd = Forwarder::start(&env.d.netns(), &reg.addr().to_string())?;
        Ok(Private {
            env,
            reg,
            _fwd: fwd,
            _token: None,
            _dir: dir,
            password,
        })
    }

    /// The registry with token auth through a token server's realm.
    fn start_token() -> Result<Self> {
        let env = DockerEnv::new()?;
        let dir = tempfile::tempdir()?;
        let password = format!("pw-{}-{}", std::process::id(), rand_suffix());
        let cert = dir.path().join("token-issuer.pem");
        let token = TokenServer::start(&cert, "alice", &password)?;
        let realm = format!("http://127.0.0.1:{}/token", token.port);
        let reg =
            RegistryProcess::start_with_token_auth(&realm, "berth-test-registry", ISSUER, &cert)?;
        let token_fwd = Forwarder::start(&env.d.netns(), &format!("127.0.0.1:{}", token.port))?;
        let fwd = Forwarder::start(&env.d.netns(), &reg.addr().to_string())?;
        Ok(Private {
            env,
            reg,
            _fwd: fwd,
            _token: Some((token, token_fwd)),
            _dir: dir,
            password,
        })
    }

    fn addr(&self) -> String {
        self.reg.addr().to_string()
    }

    fn docker(&self, args: &[&str]) -> Result<Output> {
        self.env.d.docker(args)
    }

    /// `docker login` with the password on stdin, as people script it.
    fn login(&self, password: &str) -> Result<Output> {
        let mut c =
            self.env
                .d
                .docker_cmd(&["login", "-u", "alice", "--password-stdin", &self.addr()]);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn()?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(password.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }
}

const ISSUER: &str = "berth-test-issuer";

/// `tests/fixtures/token_server.py` run by Debian's python3; killed (by PID) on drop.
struct TokenServer {
    child: std::process::Child,
    port: u16,
}

impl TokenServer {
    fn start(cert: &Path, user: &str, password: &str) -> Result<Self> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/token_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(cert)
            .args([user, password, ISSUER])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the token server (needs python3-jwt, python3-cryptography)")?;
        let mut line = String::new();
        {
            use std::io::BufRead;
            let out = child.stdout.take().expect("stdout");
            std::io::BufReader::new(out).read_line(&mut line)?;
        }
        let port = match line.trim().parse() {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("token server did not start: {line:?}");
            }
        };
        Ok(TokenServer { child, port })
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rootfs tar holding the fixture's static busybox and `/secret.txt`.
fn private_rootfs(p: &Private, secret: &str) -> Result<std::path::PathBuf> {
    let path = p._dir.path().join("rootfs.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path)?);
    let busybox = std::fs::read(berth_testkit::busybox_path())?;
    for (name, data, mode) in [
        ("bin/busybox", busybox.as_slice(), 0o755),
        ("secret.txt", secret.as_bytes(), 0o644),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, name, data)?;
    }
    b.finish()?;
    Ok(path)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn login_push_pull_logout_with_the_docker_cli() -> Result<()> {
    let p = Private::start()?;
    let addr = p.addr();
    let private = format!("{addr}/private/app:v1");
    // Content that exists nowhere else: a public copy of it would rightly be served.
    let secret = format!("secret {} {}", std::process::id(), rand_suffix());
    let rootfs = private_rootfs(&p, &secret)?;
    p.env
        .ok(&["import", &rootfs.display().to_string(), &private])?;

    // A wrong password is refused with dockerd's words.
    let o = p.login("wrong-password")?;
    assert!(!o.status.success(), "wrong password accepted: {}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "Error response from daemon: login attempt to http://{addr}/v2/ failed with status: 401 Unauthorized"
        )),
        "{}",
        text(&o)
    );

    // Pushing without having logged in: the registry's refusal.
    let o = p.docker(&["push", &private])?;
    assert!(!o.status.success(), "anonymous push accepted: {}", text(&o));
    assert!(
        text(&o).contains("no basic auth credentials"),
        "{}",
        text(&o)
    );

    let o = p.login(&p.password)?;
    assert!(o.status.success(), "login: {}", text(&o));
    assert!(text(&o).contains("Login Succeeded"), "{}", text(&o));

    // Push, then pull into a clean store: both with the stored credentials.
    let pushed = p.env.ok(&["push", &private])?;
    assert!(pushed.contains("v1: digest: sha256:"), "{pushed}");
    let digest = pushed
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("digest")
        .to_string();
    p.env.ok(&["rmi", &private])?;
    let pulled = p.env.ok(&["pull", &private])?;
    assert!(pulled.contains("Downloaded newer image"), "{pulled}");
    let out = p.env.ok(&[
        "run",
        "--rm",
        &private,
        "/bin/busybox",
        "cat",
        "/secret.txt",
    ])?;
    assert_eq!(out.trim(), secret);

    // The stored credentials also serve `docker pull` by digest and /distribution.
    let by_digest = format!("{addr}/private/app@{digest}");
    p.env.ok(&["pull", "-q", &by_digest])?;

    let o = p.docker(&["logout", &addr])?;
    assert!(o.status.success(), "logout: {}", text(&o));

    // After logout: refused, though the image is in berthd's store and its blobs in the
    // blob store the node's mirror serves.
    for reference in [&private, &by_digest] {
        let o = p.docker(&["pull", reference])?;
        assert!(
            !o.status.success(),
            "pull of {reference} after logout: {}",
            text(&o)
        );
        assert!(
            text(&o).contains("Error response from daemon: ")
                && text(&o).contains("no basic auth credentials"),
            "{reference}: {}",
            text(&o)
        );
    }

    // The node's own mirror (what berthd's anonymous pulls and other nodes ask) does
    // not hand out the private manifest or a private layer it holds.
    let manifest = format!("http://127.0.0.1:5001/v2/private/app/manifests/{digest}?ns={addr}");
    let out = p
        .env
        .d
        .in_netns(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
                &manifest,
            ],
        )
        .output()?;
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && code != "200" && code.starts_with('4'),
        "mirror served the private manifest: {code} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn search_of_a_registry_without_a_search_api_is_dockers_error() -> Result<()> {
    let p = Private::start()?;
    let o = p.docker(&["search", &format!("{}/private", p.addr())])?;
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("Error response from daemon: Unexpected status code 404"),
        "{}",
        text(&o)
    );
    Ok(())
}

#[test]
fn docker_py_login_and_pull_with_auth_config() -> Result<()> {
    let p = Private::start()?;
    let addr = p.addr();
    let private = format!("{addr}/private/py:v1");
    let bb = p.env.img("busybox:latest");
    p.env.ok(&["pull", "-q", &bb])?;
    p.env.ok(&["tag", &bb, &private])?;
    let script = r#"
import sys, docker
sock, addr, pw = sys.argv[1], sys.argv[2], sys.argv[3]
repo = addr + "/private/py"
def client():
    return docker.DockerClient(base_url="unix://" + sock, version="auto")
c = client()
try:
    c.login(username="alice", password="wrong", registry=addr, reauth=True)
    print("wrong-login accepted")
except docker.errors.APIError as e:
    print("wrong-login refused:", e.explanation)
r = c.login(username="alice", password=pw, registry=addr, reauth=True)
print("login:", r["Status"])
auth = {"username": "alice", "password": pw}
for line in c.images.push(repo, tag="v1", auth_config=auth, stream=True, decode=True):
    if "error" in line:
        print("push error:", line["error"])
c.images.remove(repo + ":v1")
img = client().images.pull(repo, tag="v1", auth_config=auth)
print("pulled:", repo + ":v1" in img.tags)
d = client().images.get_registry_data(repo + ":v1", auth_config=auth)
print("registry data:", d.id.startswith("sha256:"))
c.images.remove(repo + ":v1")
try:
    client().images.pull(repo, tag="v1", auth_config={"username": "alice", "password": "wrong"})
    print("wrong-pull accepted")
except docker.errors.APIError as e:
    print("wrong-pull refused:", e.explanation)
try:
    client().images.get_registry_data(repo + ":v1", auth_config={"username": "alice", "password": "wrong"})
    print("wrong-distribution accepted")
except docker.errors.APIError as e:
    print("wrong-distribution refused:", e.status_code, e.explanation)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(p.env.d.socket())
        .args([&addr, &p.password])
        .env("DOCKER_CONFIG", p.env.d.root().join("docker-py-config"))
        .output()?;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let expected = format!(
        "wrong-login refused: login attempt to http://{addr}/v2/ failed with status: 401 Unauthorized\n\
         login: Login Succeeded\n\
         pulled: True\n\
         registry data: True\n\
         wrong-pull refused: unauthorized: authentication required\n\
         wrong-distribution refused: 401 unauthorized: authentication required\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{t}");
    Ok(())
}

#[test]
fn token_auth_login_push_pull_logout_with_the_docker_cli() -> Result<()> {
    let p = Private::start_token()?;
    let addr = p.addr();
    let private = format!("{addr}/private/tok:v1");
    let secret = format!("token secret {} {}", std::process::id(), rand_suffix());
    let rootfs = private_rootfs(&p, &secret)?;
    p.env
        .ok(&["import", &rootfs.display().to_string(), &private])?;

    // The token server refuses the password: dockerd's words, the server's details.
    let o = p.login("wrong-password")?;
    assert!(!o.status.success(), "wrong password accepted: {}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "Error response from daemon: Get \"http://{addr}/v2/\": unauthorized: incorrect username or password"
        )),
        "{}",
        text(&o)
    );

    let o = p.login(&p.password)?;
    assert!(o.status.success(), "login: {}", text(&o));
    assert!(text(&o).contains("Login Succeeded"), "{}", text(&o));
    let pushed = p.env.ok(&["push", &private])?;
    assert!(pushed.contains("v1: digest: sha256:"), "{pushed}");
    p.env.ok(&["rmi", &private])?;
    let pulled = p.env.ok(&["pull", &private])?;
    assert!(pulled.contains("Downloaded newer image"), "{pulled}");
    let out = p.env.ok(&[
        "run",
        "--rm",
        &private,
        "/bin/busybox",
        "cat",
        "/secret.txt",
    ])?;
    assert_eq!(out.trim(), secret);

    p.env.ok(&["logout", &addr])?;
    let o = p.docker(&["pull", &private])?;
    assert!(!o.status.success(), "pull after logout: {}", text(&o));
    assert!(
        text(&o).contains("Error response from daemon: ")
            && text(&o).contains("unauthorized: authentication required"),
        "{}",
        text(&o)
    );
    Ok(())
}

/// `docker service create --with-registry-auth`: the service keeps the client's
/// credentials and the node's agent pulls the private image with them; a service created
/// without them cannot pull it (its task fails with the registry's refusal).
#[test]
fn a_service_pulls_a_private_image_with_the_credentials_it_was_created_with() -> Result<()> {
    let p = Private::start()?;
    let addr = p.addr();
    let private = format!("{addr}/private/svc:v1");
    let secret = format!("svc secret {}", rand_suffix());
    let rootfs = private_rootfs(&p, &secret)?;
    p.env
        .ok(&["import", &rootfs.display().to_string(), &private])?;
    let o = p.login(&p.password)?;
    assert!(o.status.success(), "login: {}", text(&o));
    p.env.ok(&["push", &private])?;
    p.env.ok(&["rmi", &private])?;
    p.env
        .ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
    let name = format!("priv{}", rand_suffix());
    p.env.ok(&[
        "service",
        "create",
        "--detach",
        "-q",
        "--with-registry-auth",
        "--name",
        &name,
        &private,
        "/bin/busybox",
        "sleep",
        "600",
    ])?;
    let filter = format!("label=com.docker.swarm.service.name={name}");
    berth_testkit::daemon::retry(std::time::Duration::from_secs(60), || {
        let ids = p.env.ok(&["ps", "-q", "--filter", &filter])?;
        Ok((!ids.trim().is_empty()).then_some(()))
    })
    .with_context(|| {
        format!(
            "service task never ran: {}",
            p.env
                .ok(&["service", "ps", "--no-trunc", &name])
                .unwrap_or_default()
        )
    })?;
    p.env.ok(&["service", "rm", &name])?;

    // Without credentials: the task's pull is refused by the registry.
    p.env.ok(&["logout", &addr])?;
    p.env.ok(&["rmi", "-f", &private])?;
    let anon = format!("anon{}", rand_suffix());
    let o = p.docker(&[
        "service",
        "create",
        "--detach",
        "-q",
        "--name",
        &anon,
        &private,
        "/bin/busybox",
        "sleep",
        "600",
    ])?;
    if o.status.success() {
        let err = berth_testkit::daemon::retry(std::time::Duration::from_secs(60), || {
            let out = p.env.ok(&[
                "service",
                "ps",
                "--no-trunc",
                "--format",
                "{{.Error}}",
                &anon,
            ])?;
            Ok((!out.trim().is_empty()).then_some(out))
        })?;
        assert!(err.contains("no basic auth credentials"), "{err}");
        assert!(p
            .env
            .ok(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={anon}")
            ])?
            .trim()
            .is_empty());
        p.env.ok(&["service", "rm", &anon])?;
    } else {
        // Refused at create (the image cannot be resolved without credentials).
        assert!(
            text(&o).contains("no basic auth credentials"),
            "{}",
            text(&o)
        );
    }
    p.env.ok(&["swarm", "leave", "--force"])?;
    Ok(())
}
