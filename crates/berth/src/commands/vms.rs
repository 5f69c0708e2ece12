//! VM commands: import existing machines, export them.

use anyhow::{Context, Result};
use berth_client::Client;
use berth_model::api::{VmImportRequest, VmImportResponse};

use crate::cli::{VmExportArgs, VmImportArgs};
use crate::{encode, Outcome};

pub async fn import(client: &Client, args: VmImportArgs) -> Result<Outcome> {
    let path = std::fs::canonicalize(&args.file).with_context(|| format!("{}", args.file.display()))?;
    let reply: VmImportResponse = client
        .post(
            "/v1/vms/import",
            &VmImportRequest {
                path: path.display().to_string(),
                name: args.name,
                allow_device: args.allow_device,
            },
        )
        .await?;
    for setting in &reply.not_carried_over {
        eprintln!("not carried over: {setting}");
    }
    for attachment in &reply.network {
        eprintln!("network: {attachment}");
    }
    println!("{}", reply.id);
    eprintln!(
        "imported VM {} (stopped); start it with `berth start {}`",
        reply.name, reply.name
    );
    Ok(Outcome::Success)
}

pub async fn export(client: &Client, args: VmExportArgs) -> Result<Outcome> {
    let xml = client
        .get_text(&format!(
            "/v1/instances/{}/export?format={}",
            encode(&args.name),
            encode(&args.format)
        ))
        .await?;
    match args.output {
        Some(path) => std::fs::write(&path, xml).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{xml}"),
    }
    Ok(Outcome::Success)
}
