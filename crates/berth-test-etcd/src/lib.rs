//! For tests only: a real etcd cluster (Debian's `etcd` 3.4) of N members on 127.0.0.1
//! (or one in each of N network namespaces),
//! each with its own client and peer port and data directory under one temporary
//! directory; members can be killed and restarted, and everything ends with the value.
//! Used by berth-store's tests and by the cluster tests in the workspace's tests/.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh or restarted member may take to answer /health (it takes well under a
/// second on an idle machine; the rest is for a busy one).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Debian installs etcd; `BERTH_TEST_ETCD` overrides it.
fn etcd_binary() -> PathBuf {
    std::env::var_os("BERTH_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// Whether etcd is installed (tests say so plainly instead of failing obscurely).
pub fn available() -> bool {
    etcd_binary().exists()
}

pub struct Member {
    pub name: String,
    /// The address it listens on: 127.0.0.1, or its network namespace's address.
    pub host: String,
    /// The network namespace it runs in (`ip netns`), if not this one.
    pub netns: Option<String>,
    pub client_port: u16,
    pub peer_port: u16,
    /// Plain HTTP /health and /metrics, also when clients must use TLS.
    pub metrics_port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
    process: Option<Child>,
}

impl Member {
    pub fn client_endpoint(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }
}

/// PEM files of a cluster that requires TLS and client certificates (made by `openssl`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<TlsFiles>,
    // Dropped last: the data directories and logs.
    dir: tempfile::TempDir,
}

/// Ports nobody listens on right now. Another process may take one before etcd binds it;
/// `start` then tries again with new ports.
fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one of them answers as healthy.
    pub fn start(size: usize) -> std::io::Result<EtcdCluster> {
        EtcdCluster::start_with(size, false)
    }

    /// As `start`, with clients served only over TLS and required to show a certificate
    /// signed by the cluster's own CA (`tls()` names the files).
    pub fn start_tls(size: usize) -> std::io::Result<EtcdCluster> {
        EtcdCluster::start_with(size, true)
    }

    /// One member in each of the given network namespaces (`(netns, address)` pairs,
    /// addresses this namespace reaches), on etcd's usual ports there: each test host has
    /// its own member, and cutting a host off cuts its member off too.
    pub fn start_in_namespaces(hosts: &[(&str, &str)]) -> std::io::Result<EtcdCluster> {
        let dir = tempfile::Builder::new().prefix("berth-etcd-").tempdir()?;
        let members: Vec<Member> = hosts
            .iter()
            .enumerate()
            .map(|(i, (netns, host))| Member {
                name: format!("m{i}"),
                host: host.to_string(),
                netns: Some(netns.to_string()),
                client_port: 2379,
                peer_port: 2380,
                metrics_port: 2381,
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log: dir.path().join(format!("m{i}.log")),
                process: None,
            })
            .collect();
        EtcdCluster::launch(members, None, dir)
    }

    fn start_with(size: usize, tls: bool) -> std::io::Result<EtcdCluster> {
        let mut last_error = None;
        for _ in 0..3 {
            match EtcdCluster::try_start(size, tls) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::Error::other("etcd did not start")))
    }

    fn try_start(size: usize, tls: bool) -> std::io::Result<EtcdCluster> {
        let dir = tempfile::Builder::new().prefix("berth-etcd-").tempdir()?;
        let tls = if tls {
            Some(make_certificates(dir.path())?)
        } else {
            None
        };
        let ports = free_ports(size * 3)?;
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                host: "127.0.0.1".into(),
                netns: None,
                client_port: ports[3 * i],
                peer_port: ports[3 * i + 1],
                metrics_port: ports[3 * i + 2],
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log: dir.path().join(format!("m{i}.log")),
                process: None,
            })
            .collect();
        EtcdCluster::launch(members, tls, dir)
    }

    fn launch(members: Vec<Member>, tls: Option<TlsFiles>, dir: tempfile::TempDir) -> std::io::Result<EtcdCluster> {
        let size = members.len();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}:{}", m.name, m.host, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            tls,
            dir,
        };
        for index in 0..size {
            cluster.spawn(index, "new")?;
        }
        for index in 0..size {
            cluster.wait_healthy(index)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, index: usize, state: &str) -> std::io::Result<()> {
        let initial_cluster = self.initial_cluster.clone();
        let member = &mut self.members[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{}:{}", member.host, member.client_port);
        let peer = format!("http://{}:{}", member.host, member.peer_port);
        let mut command = match &member.netns {
            None => berth_process::command(etcd_binary()),
            Some(netns) => {
                // nsenter joins the network namespace and execs etcd: killing the child
                // kills the member.
                let mut command = berth_process::command("nsenter");
                command.arg(format!("--net=/run/netns/{netns}")).arg(etcd_binary());
                command
            }
        };
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca_cert)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", "berth-test"])
            .arg("--listen-metrics-urls")
            .arg(format!("http://{}:{}", member.host, member.metrics_port))
            // Tests write little; snapshots and quotas at their defaults would only cost disk.
            .args(["--snapshot-count", "10000", "--quota-backend-bytes", "268435456"])
            // A member that was cut off asks before it campaigns, so its return does not depose
            // the majority's leader (etcd 3.5's default; the README advises it for 3.4).
            .arg("--pre-vote")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| std::io::Error::other(format!("starting {}: {e}", etcd_binary().display())))?;
        member.process = Some(child);
        Ok(())
    }

    /// Polls the member's /health until it reports healthy (it has a leader).
    pub fn wait_healthy(&mut self, index: usize) -> std::io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let member = &mut self.members[index];
            if let Some(child) = member.process.as_mut() {
                if let Some(status) = child.try_wait()? {
                    member.process = None;
                    return Err(std::io::Error::other(format!(
                        "etcd member {} exited ({status}): {}",
                        member.name,
                        tail(&member.log)
                    )));
                }
            }
            if healthy(&member.host, member.metrics_port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "etcd member {} not healthy after {READY_TIMEOUT:?}: {}",
                    member.name,
                    tail(&member.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// `host:port` of every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_endpoint).collect()
    }

    /// The form berth's `--store` takes: `etcd://HOST:PORT,HOST:PORT,...`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// The certificates, for a cluster started with `start_tls`.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILLs a member (its data directory stays, so it can be restarted).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed member again from its data directory and waits until it is healthy.
    pub fn restart(&mut self, index: usize) -> std::io::Result<()> {
        self.kill(index);
        self.spawn(index, "existing")?;
        self.wait_healthy(index)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, signed by the CA.
fn make_certificates(dir: &Path) -> std::io::Result<TlsFiles> {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| -> std::io::Result<()> {
        let output = berth_process::command("openssl").args(args).current_dir(dir).output()?;
        if output.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"],
            &key[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=berth test CA",
            ],
        ]
        .concat(),
    )?;
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let (key_file, csr, cert, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        openssl(
            &[
                &["req"],
                &key[..],
                &[
                    "-keyout",
                    &key_file,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN=berth test {name}"),
                ],
            ]
            .concat(),
        )?;
        std::fs::write(
            path(&ext),
            format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ])?;
    }
    Ok(TlsFiles {
        ca_cert: path("ca.crt"),
        server_cert: path("server.crt"),
        server_key: path("server.key"),
        client_cert: path("client.crt"),
        client_key: path("client.key"),
    })
}

/// etcd 3.4 answers `GET /health` with `{"health":"true"}` once it has a leader.
fn healthy(host: &str, port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((host, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

/// What a member said before it failed: its fatal and error lines, else its last lines.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("panic") || l.contains(" C | ") || l.contains(" E | ") || l.contains("fatal"))
        .take(5)
        .collect();
    if errors.is_empty() {
        lines[lines.len().saturating_sub(5)..].join("\n")
    } else {
        errors.join("\n")
    }
}
