//! The cluster store: etcd v3 through the `etcd-client` crate. A record's revision is its
//! key's `mod_revision`; checks become `Compare`s of one `Txn` (whose failure branch reads
//! the checked keys back, to say which check failed); watches resume from the last revision
//! they delivered when the member serving them goes away; leases are etcd's own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, TxnOp, TxnOpResponse, WatchOptions,
};

use crate::keys::prefix_end;
use crate::kv::{
    Expect, KeyValue, Lease, LeaseId, Op, RangePage, RangeRequest, Revision, Snapshot, StateStore, Txn, WatchEvent,
    WatchEventKind, WatchStream, MAX_TXN_OPS,
};
use crate::{StoreError, StoreResult};

/// How to reach etcd: its members' client addresses, and TLS when it requires it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host:port` of each member (any member serves every request).
    pub endpoints: Vec<String>,
    pub tls: Option<EtcdTls>,
    pub connect_timeout: Duration,
    /// How long one request may take before it counts as failed (and is retried on
    /// another member when that is safe).
    pub request_timeout: Duration,
}

/// PEM files for TLS to etcd (`--etcd-cacert`, `--etcd-cert`, `--etcd-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed the members' certificates.
    pub ca_cert: PathBuf,
    /// A client certificate and its key, for members that require client authentication.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// `etcd://HOST:PORT[,HOST:PORT...]` (the form `--store` and `--cluster` take).
    pub fn from_url(url: &str) -> Result<EtcdConfig, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("'{url}' is not an etcd URL; write etcd://HOST:PORT[,HOST:PORT...]"))?;
        let endpoints: Vec<String> = rest
            .split(',')
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .collect();
        for endpoint in &endpoints {
            let valid = endpoint
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !valid {
                return Err(format!(
                    "etcd endpoint '{endpoint}' in '{url}' is not HOST:PORT; write etcd://HOST:PORT[,HOST:PORT...]"
                ));
            }
        }
        Ok(EtcdConfig::new(endpoints))
    }
}

/// How often a broken watch is re-established before it reports the store unavailable.
const WATCH_RESUME_ATTEMPTS: u32 = 20;
const WATCH_RESUME_DELAY: Duration = Duration::from_millis(250);

/// How long a request goes on trying the members (a full round at least) before it reports
/// etcd unavailable: an election after a leader is lost or a member rejoins takes about a
/// second, more on a loaded host, and a user's request should ride it out.
const RETRY_FOR: Duration = Duration::from_secs(5);
/// The pause after each full round over the members while they elect a leader.
const ROUND_PAUSE: Duration = Duration::from_millis(250);

pub struct EtcdStore {
    members: Arc<Members>,
    endpoints: String,
}

/// One client per member, one of them in use: requests go to it until it fails, then to
/// the next, as etcd's own client pins an endpoint. (A balanced channel over all members
/// keeps sending part of the requests to a dead one.)
struct Members {
    clients: Vec<Client>,
    current: AtomicUsize,
}

impl Members {
    fn pick(&self) -> (usize, Client) {
        let index = self.current.load(Ordering::Relaxed) % self.clients.len();
        (index, self.clients[index].clone())
    }

    /// Moves on from a member that failed (unless another request already did).
    fn failed(&self, index: usize) {
        let next = (index + 1) % self.clients.len();
        let _ = self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Runs a request on the member in use, and on the next ones while members are
    /// unreachable; also says whether it was sent more than once.
    async fn call<T, F, Fut>(&self, request: F) -> (Result<T, etcd_client::Error>, bool)
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (index, client) = self.pick();
            match request(client).await {
                Err(e) if is_unavailable(&e) && (attempt < self.clients.len() || started.elapsed() < RETRY_FOR) => {
                    tracing::debug!(error = %e, member = index, attempt, "etcd member unavailable; trying the next");
                    self.failed(index);
                    // After a full round, give the cluster a moment to elect a leader.
                    if attempt % self.clients.len() == 0 {
                        tokio::time::sleep(ROUND_PAUSE).await;
                    }
                }
                result => return (result, attempt > 1),
            }
        }
    }
}

impl EtcdStore {
    /// Connects and checks that the cluster answers (a read through a member with quorum).
    pub async fn connect(config: &EtcdConfig) -> StoreResult<EtcdStore> {
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        let urls: Vec<String> = config.endpoints.iter().map(|e| format!("{scheme}://{e}")).collect();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        let endpoints = config.endpoints.join(",");
        let mut clients = Vec::new();
        for url in &urls {
            // Lazy: a member that is down now is only tried when it is needed.
            let client = Client::connect([url], Some(options.clone()))
                .await
                .map_err(|e| StoreError::Unavailable(format!("cannot reach etcd at {url}: {e}")))?;
            clients.push(client);
        }
        let members = Arc::new(Members {
            clients,
            current: AtomicUsize::new(0),
        });
        let store = EtcdStore { members, endpoints };
        store
            .range(RangeRequest {
                prefix: crate::keys::META.to_string(),
                limit: 1,
                keys_only: true,
                ..RangeRequest::default()
            })
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "etcd at {} does not answer ({e}); check that its members run, that these are their client \
                     addresses, and the TLS files (--etcd-cacert, --etcd-cert, --etcd-key) if they require TLS",
                    store.endpoints
                ))
            })?;
        Ok(store)
    }

    /// Whether the store holds exactly what `txn` writes, all at one revision (which is
    /// returned): then an earlier attempt of it committed.
    async fn own_write(&self, txn: &Txn) -> StoreResult<Option<Revision>> {
        let keys: Vec<String> = txn.ops.iter().map(|op| op.key().to_string()).collect();
        let current = self.get(&keys).await?;
        let mut revision = None;
        for (op, kv) in txn.ops.iter().zip(&current.kvs) {
            match (op, kv) {
                (Op::Put { value, lease, .. }, Some(kv)) if kv.value == *value && kv.lease == *lease => {
                    if *revision.get_or_insert(kv.mod_revision) != kv.mod_revision {
                        return Ok(None);
                    }
                }
                (Op::Delete { .. }, None) => {}
                _ => return Ok(None),
            }
        }
        Ok(Some(revision.unwrap_or(current.revision)))
    }

    /// Runs an idempotent request, on another member if one is unreachable.
    async fn read<T, F, Fut>(&self, request: F) -> StoreResult<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.members.call(request).await.0.map_err(to_store_error)
    }
}

fn tls_options(tls: &EtcdTls) -> StoreResult<TlsOptions> {
    let read = |what: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| StoreError::Backend(format!("reading the etcd {what} {}: {e}", path.display())))
    };
    let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(read("CA certificate", &tls.ca_cert)?));
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            options = options.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ))
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Backend(
                "a client certificate needs its key and a key its certificate: give both --etcd-cert and --etcd-key"
                    .into(),
            ))
        }
    }
    Ok(options)
}

/// etcd's errors as the store's: unreachable, compacted, lease gone, or anything else.
fn to_store_error(err: etcd_client::Error) -> StoreError {
    if is_unavailable(&err) {
        return StoreError::Unavailable(match &err {
            etcd_client::Error::GRpcStatus(status) => format!("etcd: {}", status.message()),
            other => format!("etcd: {other}"),
        });
    }
    match &err {
        etcd_client::Error::GRpcStatus(status) if status.message().contains("required revision has been compacted") => {
            StoreError::Compacted {
                requested: 0,
                compacted: 0,
            }
        }
        etcd_client::Error::GRpcStatus(status) => StoreError::Backend(format!("etcd: {}", status.message())),
        _ => StoreError::Backend(format!("etcd: {err}")),
    }
}

/// The member could not be reached or could not serve (no leader, a leader change).
fn is_unavailable(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            // A broken connection (a failed TLS handshake among others) comes as "unknown".
            let connection_lost = status.code() == tonic::Code::Unknown && status.message().contains("transport error");
            connection_lost
                || matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                ) && !status.message().contains("lease not found")
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| h.revision().max(0) as u64)
}

fn to_key_value(kv: &etcd_client::KeyValue) -> StoreResult<KeyValue> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|e| StoreError::Corrupt(format!("a key in etcd is not UTF-8: {e}")))?
            .to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision().max(0) as u64,
        mod_revision: kv.mod_revision().max(0) as u64,
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    })
}

fn compare(key: &str, expect: &Expect) -> Compare {
    match expect {
        Expect::Absent => Compare::mod_revision(key, CompareOp::Equal, 0),
        Expect::Present => Compare::mod_revision(key, CompareOp::Greater, 0),
        Expect::Revision(revision) => Compare::mod_revision(key, CompareOp::Equal, *revision as i64),
        Expect::Value(value) => Compare::value(key, CompareOp::Equal, value.clone()),
    }
}

/// A write's error; a put with a lease etcd does not have is `LeaseNotFound`.
fn txn_error(err: etcd_client::Error, txn: &Txn) -> StoreError {
    match to_store_error(err) {
        StoreError::Backend(message) if message.contains("lease not found") => {
            let lease = txn.ops.iter().find_map(|op| match op {
                Op::Put { lease: Some(lease), .. } => Some(*lease),
                _ => None,
            });
            lease.map_or(StoreError::Backend(message), StoreError::LeaseNotFound)
        }
        other => other,
    }
}

/// The keys a transaction's response to a list of gets carries, in order.
fn got(responses: Vec<TxnOpResponse>) -> StoreResult<Vec<Option<KeyValue>>> {
    responses
        .into_iter()
        .map(|response| match response {
            TxnOpResponse::Get(get) => get.kvs().first().map(to_key_value).transpose(),
            _ => Err(StoreError::Backend("etcd answered a read with something else".into())),
        })
        .collect()
}

#[async_trait]
impl StateStore for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd {}", self.endpoints)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn page_keys(&self) -> usize {
        // Instance specs are a few KiB: a page stays around a megabyte.
        200
    }

    async fn get(&self, keys: &[String]) -> StoreResult<Snapshot> {
        if keys.len() > MAX_TXN_OPS {
            return Err(StoreError::TooManyOps {
                ops: keys.len(),
                limit: MAX_TXN_OPS,
            });
        }
        // A transaction of reads only: one revision for all of them.
        let response = self
            .read(|mut client| {
                let gets: Vec<TxnOp> = keys.iter().map(|key| TxnOp::get(key.as_str(), None)).collect();
                async move { client.txn(etcd_client::Txn::new().and_then(gets)).await }
            })
            .await?;
        Ok(Snapshot {
            revision: revision_of(response.header()),
            kvs: got(response.op_responses())?,
        })
    }

    async fn range(&self, request: RangeRequest) -> StoreResult<RangePage> {
        let start = match &request.start_after {
            Some(after) if after.as_str() >= request.prefix.as_str() => format!("{after}\0"),
            _ => request.prefix.clone(),
        };
        let mut options = GetOptions::new()
            .with_range(prefix_end(&request.prefix))
            .with_limit(request.limit as i64);
        if let Some(revision) = request.revision {
            options = options.with_revision(revision as i64);
        }
        if request.keys_only {
            options = options.with_keys_only();
        }
        let response = self
            .read(|mut client| {
                let (start, options) = (start.clone(), options.clone());
                async move { client.get(start, Some(options)).await }
            })
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } => StoreError::Compacted {
                    requested: request.revision.unwrap_or(0),
                    compacted: request.revision.unwrap_or(0) + 1,
                },
                other => other,
            })?;
        Ok(RangePage {
            kvs: response.kvs().iter().map(to_key_value).collect::<StoreResult<_>>()?,
            more: response.more(),
            revision: revision_of(response.header()),
        })
    }

    async fn txn(&self, txn: Txn) -> StoreResult<Revision> {
        txn.validate()?;
        let compares: Vec<Compare> = txn.checks.iter().map(|c| compare(&c.key, &c.expect)).collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => TxnOp::put(
                    key.as_str(),
                    value.clone(),
                    lease.map(|lease| PutOptions::new().with_lease(lease.0)),
                ),
                Op::Delete { key } => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        // On failure, read the checked keys back to say which check failed and why.
        let reads: Vec<TxnOp> = txn.checks.iter().map(|c| TxnOp::get(c.key.as_str(), None)).collect();
        let request = etcd_client::Txn::new().when(compares).and_then(ops).or_else(reads);
        // A write whose outcome is unknown (its member died, the leader changed) is sent
        // again. Every check makes it a compare-and-swap, which cannot apply twice: if the
        // first attempt did commit, the retry fails its checks, and `own_write` recognises
        // the first attempt's result as ours.
        let (response, resent) = self
            .members
            .call(|mut client| {
                let request = request.clone();
                async move { client.txn(request).await }
            })
            .await;
        let response = response.map_err(|e| txn_error(e, &txn))?;
        if response.succeeded() {
            return Ok(revision_of(response.header()));
        }
        let current = got(response.op_responses())?;
        let failed = txn
            .checks
            .iter()
            .zip(&current)
            .find(|(check, kv)| !check.holds(kv.as_ref()))
            .or_else(|| txn.checks.iter().zip(&current).next());
        if resent {
            if let Some(revision) = self.own_write(&txn).await? {
                return Ok(revision);
            }
        }
        match failed {
            Some((check, kv)) => Err(StoreError::Conflict {
                key: check.key.clone(),
                expected: check.expect.clone(),
                actual: kv.as_ref().map(|kv| kv.mod_revision),
            }),
            None => Err(StoreError::Backend("etcd refused a transaction without checks".into())),
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<WatchStream> {
        // "From now" is the cluster's now, read through quorum: a member that lags behind
        // would otherwise replay changes the caller has already seen.
        let from = match from {
            0 => {
                self.range(RangeRequest {
                    prefix: prefix.to_string(),
                    limit: 1,
                    keys_only: true,
                    ..RangeRequest::default()
                })
                .await?
                .revision
                    + 1
            }
            from => from,
        };
        let (sender, stream) = WatchStream::channel();
        let members = self.members.clone();
        let prefix = prefix.to_string();
        let range_end = prefix_end(&prefix);
        // Fragmented: a watcher that fell behind is caught up with every event since in one
        // response otherwise, tens of MiB, which the client refuses (4 MiB) — and again on
        // every resume. etcd splits it at its request limit instead.
        let options = move |from: Revision| {
            WatchOptions::new()
                .with_range(range_end.clone())
                .with_start_revision(from as i64)
                .with_fragment()
        };
        let (mut watcher, mut responses) = self
            .read(|mut client| {
                let (prefix, options) = (prefix.clone(), options(from));
                async move { client.watch(prefix, Some(options)).await }
            })
            .await?
            .split();
        // The member that (most likely) serves the watch: the one requests go to now.
        let mut serving = self.members.pick().0;
        tokio::spawn(async move {
            // Where a resumed watch starts: the revision of the last event delivered, as a
            // fragment may have ended inside it, or `from` before any. `delivered` counts
            // that revision's events already sent; a resumed watch skips that many again.
            let mut next = from;
            let mut delivered = 0usize;
            let mut skip = 0usize;
            let mut failures = 0;
            loop {
                let message = tokio::select! {
                    message = responses.message() => message,
                    _ = sender.closed() => break,
                };
                let broken = match message {
                    Ok(Some(response)) if response.compact_revision() > 0 => {
                        let _ = sender
                            .send(Err(StoreError::Compacted {
                                requested: next,
                                compacted: response.compact_revision() as u64,
                            }))
                            .await;
                        break;
                    }
                    // A member that lost its leader cancels its watches (we require one).
                    Ok(Some(response)) if response.canceled() => format!("canceled: {}", response.cancel_reason()),
                    Ok(Some(response)) => {
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            let item = to_key_value(kv).map(|kv| {
                                let kind = match event.event_type() {
                                    EventType::Put => WatchEventKind::Put,
                                    EventType::Delete => WatchEventKind::Delete,
                                };
                                WatchEvent {
                                    kind,
                                    revision: kv.mod_revision,
                                    value: if kind == WatchEventKind::Put {
                                        kv.value
                                    } else {
                                        Vec::new()
                                    },
                                    key: kv.key,
                                }
                            });
                            if let Ok(event) = &item {
                                if event.revision == next && skip > 0 {
                                    skip -= 1;
                                    continue;
                                }
                                skip = 0;
                                if event.revision == next {
                                    delivered += 1;
                                } else {
                                    (next, delivered) = (event.revision, 1);
                                }
                                failures = 0;
                            }
                            if sender.send(item).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    Ok(None) => "the stream ended".to_string(),
                    Err(e) => e.to_string(),
                };
                // The member serving the watch went away: resume on another from the last
                // revision seen, skipping its events already sent, so no event is lost or
                // repeated.
                tracing::debug!(reason = %broken, member = serving, "etcd watch broke; resuming");
                members.failed(serving);
                failures += 1;
                if failures > WATCH_RESUME_ATTEMPTS {
                    let _ = sender
                        .send(Err(StoreError::Unavailable(format!(
                            "etcd: the watch could not be resumed on any member ({broken})"
                        ))))
                        .await;
                    break;
                }
                tokio::time::sleep(WATCH_RESUME_DELAY).await;
                skip = delivered;
                let (index, mut client) = members.pick();
                serving = index;
                match client.watch(prefix.as_str(), Some(options(next))).await {
                    Ok(resumed) => (watcher, responses) = resumed.split(),
                    Err(e) => tracing::debug!(error = %e, member = index, "resuming an etcd watch"),
                }
            }
            // Best effort: the server also forgets the watch when the stream closes.
            let _ = watcher.cancel(0).await;
        });
        Ok(stream)
    }

    async fn members(&self) -> StoreResult<Vec<String>> {
        let response = self
            .read(|mut client| async move { client.member_list().await })
            .await?;
        Ok(response
            .members()
            .iter()
            .map(|m| format!("{} at {}", m.name(), m.client_urls().join(",")))
            .collect())
    }

    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        let options = CompactionOptions::new().with_physical();
        self.read(|mut client| {
            let options = options.clone();
            async move { client.compact(revision as i64, Some(options)).await }
        })
        .await
        .map_err(|e| match e {
            StoreError::Compacted { .. } => StoreError::Compacted {
                requested: revision,
                compacted: revision,
            },
            other => other,
        })?;
        Ok(())
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<Lease> {
        let seconds = ttl.as_secs_f64().ceil().max(1.0) as i64;
        // Sent again only if unanswered: a lease granted twice expires unused.
        let response = self
            .read(|mut client| async move { client.lease_grant(seconds, None).await })
            .await?;
        Ok(Lease {
            id: LeaseId(response.id()),
            ttl: Duration::from_secs(response.ttl().max(0) as u64),
        })
    }

    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        // Opening the stream sends one renewal and waits for its answer (a TTL of 0, which
        // the crate reports as "lease not found", for a lease etcd no longer has); the
        // stream closes when dropped. One message each way: 5,000 nodes renewing every
        // 3 s cost the etcd leader half what a second keep-alive on the stream did.
        let (result, _) = self
            .members
            .call(|mut client| async move { client.lease_keep_alive(lease.0).await.map(|_| ()) })
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(etcd_client::Error::LeaseKeepAliveError(message)) if message.contains("lease not found") => {
                Err(StoreError::LeaseNotFound(lease))
            }
            Err(other) => Err(to_store_error(other)),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> StoreResult<()> {
        let (result, resent) = self
            .members
            .call(|mut client| async move { client.lease_revoke(lease.0).await })
            .await;
        match result.map_err(to_store_error) {
            Ok(_) => Ok(()),
            Err(StoreError::Backend(message)) if message.contains("lease not found") => {
                // A revoke sent again finds the lease gone: the first one did it.
                if resent {
                    Ok(())
                } else {
                    Err(StoreError::LeaseNotFound(lease))
                }
            }
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_endpoints() {
        let config = EtcdConfig::from_url("etcd://10.0.0.1:2379,node-b:2379").unwrap();
        assert_eq!(config.endpoints, ["10.0.0.1:2379", "node-b:2379"]);
        for bad in [
            "http://x:1",
            "etcd://",
            "etcd://host",
            "etcd://host:0",
            "etcd://:2379",
            "etcd://a:1,b",
        ] {
            assert!(EtcdConfig::from_url(bad).is_err(), "{bad}");
        }
    }
}
