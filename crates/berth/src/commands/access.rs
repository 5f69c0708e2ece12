//! Remote access: `trust` (on the server: which client certificates it trusts), `remote`
//! (on the client: daemons it reaches over HTTPS) and `audit`.

use anyhow::{bail, Context, Result};
use berth_client::tls::{self, Identity, JoinToken, Remote, Remotes};
use berth_client::Client;
use berth_model::project::{Project, ProjectQuotas, PROJECT_LABEL};
use berth_model::quantity::ByteSize;
use berth_model::trust::{AuditEntry, TrustAddRequest, TrustAddResponse, TrustJoinRequest, TrustedClient};

use crate::cli::*;
use crate::output::print_table;
use crate::{encode, Outcome};

pub async fn trust_add(client: &Client, args: TrustAddArgs) -> Result<Outcome> {
    let certificate = match &args.certificate {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    let request = TrustAddRequest {
        name: args.name.clone(),
        certificate,
        token: args.token,
        project: args.project.clone(),
    };
    let reply: TrustAddResponse = client.post("/v1/trust", &request).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(Outcome::Success);
    }
    if let Some(token) = reply.token {
        eprintln!(
            "One-time join token for {} (valid until {}); on the client run:\n  berth remote add REMOTE-NAME [https://HOST:8443] --token TOKEN",
            args.name,
            reply.expires_at.map(|t| t.to_rfc3339()).unwrap_or_default()
        );
        println!("{token}");
    } else if let Some(trusted) = reply.client {
        println!("trusted {} ({})", trusted.name, trusted.fingerprint);
    }
    Ok(Outcome::Success)
}

pub async fn trust_list(client: &Client, args: JsonArgs) -> Result<Outcome> {
    let clients: Vec<TrustedClient> = client.get("/v1/trust").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&clients)?);
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.fingerprint.chars().take(16).collect(),
                c.added_by.clone(),
                c.added_at.format("%Y-%m-%d %H:%M").to_string(),
                c.expires_at
                    .map_or_else(|| "never".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
            ]
        })
        .collect();
    print_table(&["NAME", "FINGERPRINT", "ADDED BY", "ADDED", "EXPIRES"], &rows);
    Ok(Outcome::Success)
}

pub async fn trust_remove(client: &Client, args: TrustRmArgs) -> Result<Outcome> {
    client.delete(&format!("/v1/trust/{}", encode(&args.name))).await?;
    println!("{}", args.name);
    Ok(Outcome::Success)
}

pub async fn audit(client: &Client, args: AuditArgs) -> Result<Outcome> {
    let entries: Vec<AuditEntry> = client.get(&format!("/v1/audit?limit={}", args.limit)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.who.chars().take(40).collect(),
                format!("{} {}", e.method, e.path),
                match &e.refused {
                    Some(_) => format!("{} refused", e.status),
                    None => e.status.to_string(),
                },
            ]
        })
        .collect();
    print_table(&["TIME", "WHO", "REQUEST", "STATUS"], &rows);
    Ok(Outcome::Success)
}

pub async fn remote_add(args: RemoteAddArgs) -> Result<Outcome> {
    let dir = tls::config_dir();
    let mut remotes = Remotes::load(&dir)?;
    if remotes.remotes.contains_key(&args.name) {
        bail!(
            "a remote is already called {}; `berth remote rm {}` first or pick another name",
            args.name,
            args.name
        );
    }
    let token = JoinToken::decode(&args.token)?;
    let url = match args.url {
        Some(url) => url,
        None => match token.addresses.first() {
            Some(address) => format!("https://{address}"),
            None => bail!(
                "the token names no address (the server listens on every address): give the URL, https://HOST:8443"
            ),
        },
    };
    let identity = Identity::load_or_create(&dir, "client", vec!["berth-client".into()])?;
    let client = Client::for_url(&args.name, &url, &identity, &token.fingerprint)?;
    let joined: TrustedClient = client
        .post(
            "/v1/trust/join",
            &TrustJoinRequest {
                secret: token.secret.clone(),
            },
        )
        .await?;
    remotes.remotes.insert(
        args.name.clone(),
        Remote {
            url: url.clone(),
            fingerprint: token.fingerprint,
        },
    );
    remotes.save(&dir)?;
    println!("remote {} added: {url}, trusted there as {}", args.name, joined.name);
    Ok(Outcome::Success)
}

pub fn remote_list(args: JsonArgs) -> Result<Outcome> {
    let remotes = Remotes::load(&tls::config_dir())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&remotes.remotes)?);
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = remotes
        .remotes
        .iter()
        .map(|(name, remote)| {
            vec![
                name.clone(),
                remote.url.clone(),
                remote.fingerprint.chars().take(16).collect(),
            ]
        })
        .collect();
    print_table(&["NAME", "URL", "FINGERPRINT"], &rows);
    Ok(Outcome::Success)
}

pub fn remote_remove(args: RemoteRmArgs) -> Result<Outcome> {
    let dir = tls::config_dir();
    let mut remotes = Remotes::load(&dir)?;
    if remotes.remotes.remove(&args.name).is_none() {
        bail!("no remote {}; `berth remote ls` lists them", args.name);
    }
    remotes.save(&dir)?;
    println!("{}", args.name);
    Ok(Outcome::Success)
}

fn size(flag: &str, value: &Option<String>) -> Result<Option<u64>> {
    value
        .as_deref()
        .map(|text| {
            text.parse::<ByteSize>()
                .map(|b| b.0)
                .map_err(|e| anyhow::anyhow!("{flag} {text}: {e}"))
        })
        .transpose()
}

pub async fn project_create(client: &Client, args: ProjectCreateArgs) -> Result<Outcome> {
    let project = Project {
        name: args.name.clone(),
        quotas: ProjectQuotas {
            instances: args.max_instances,
            cpus: args.max_cpus,
            memory_bytes: size("--max-memory", &args.max_memory)?,
            disk_bytes: size("--max-disk", &args.max_disk)?,
        },
        created_at: chrono::Utc::now(),
    };
    let created: Project = client.post("/v1/projects", &project).await?;
    println!("{}", created.name);
    Ok(Outcome::Success)
}

pub async fn project_list(client: &Client, args: JsonArgs) -> Result<Outcome> {
    let projects: Vec<Project> = client.get("/v1/projects").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&projects)?);
        return Ok(Outcome::Success);
    }
    let instances: Vec<berth_model::Instance> = client.get("/v1/instances?all=true").await?;
    let unbounded = || "-".to_string();
    let rows: Vec<Vec<String>> = projects
        .iter()
        .map(|p| {
            let members = instances
                .iter()
                .filter(|i| i.spec.labels.get(PROJECT_LABEL) == Some(&p.name))
                .count();
            vec![
                p.name.clone(),
                format!(
                    "{members}/{}",
                    p.quotas.instances.map_or_else(unbounded, |n| n.to_string())
                ),
                p.quotas.cpus.map_or_else(unbounded, |c| c.to_string()),
                p.quotas
                    .memory_bytes
                    .map_or_else(unbounded, |m| ByteSize(m).to_string()),
                p.quotas.disk_bytes.map_or_else(unbounded, |d| ByteSize(d).to_string()),
            ]
        })
        .collect();
    print_table(&["NAME", "INSTANCES", "CPUS", "MEMORY", "DISK"], &rows);
    Ok(Outcome::Success)
}

pub async fn project_remove(client: &Client, args: ProjectRmArgs) -> Result<Outcome> {
    client.delete(&format!("/v1/projects/{}", encode(&args.name))).await?;
    println!("{}", args.name);
    Ok(Outcome::Success)
}
