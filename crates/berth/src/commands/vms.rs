//! VM commands: import existing machines, export them.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_client::Client;
use berth_model::api::{
    ManifestDigest, VmExportRequest, VmExportResponse, VmImportRequest, VmImportResponse, VmPackageFormat,
};

use crate::cli::{VmExportArgs, VmImportArgs};
use crate::{encode, Outcome};

/// A spinner with the elapsed time while the daemon copies disks (a terminal only).
fn working(message: String) -> indicatif::ProgressBar {
    let spinner = indicatif::ProgressBar::new_spinner();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        spinner.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        spinner.set_message(message);
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    } else {
        spinner.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    spinner
}

pub async fn import(client: &Client, args: VmImportArgs) -> Result<Outcome> {
    let path = std::fs::canonicalize(&args.file).with_context(|| format!("{}", args.file.display()))?;
    let spinner = working(format!("importing {}", path.display()));
    let reply: Result<VmImportResponse, _> = client
        .post(
            "/v1/vms/import",
            &VmImportRequest {
                path: path.display().to_string(),
                name: args.name,
                allow_device: args.allow_device,
                vm: args.vm,
                deployment: args.deployment,
            },
        )
        .await;
    spinner.finish_and_clear();
    let reply = reply?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(Outcome::Success);
    }
    let machines = std::iter::once((&reply.id, &reply.name, &reply.not_carried_over, &reply.network)).chain(
        reply
            .others
            .iter()
            .map(|m| (&m.id, &m.name, &m.not_carried_over, &m.network)),
    );
    for (id, name, not_carried_over, network) in machines {
        for setting in not_carried_over {
            eprintln!("{name}: not carried over: {setting}");
        }
        for attachment in network {
            eprintln!("{name}: network: {attachment}");
        }
        println!("{id}");
        eprintln!("imported VM {name} (stopped); start it with `berth start {name}`");
    }
    Ok(Outcome::Success)
}

/// `--manifest-digest`'s value (clap has checked it is one of these).
fn manifest_digest(name: &str) -> Result<ManifestDigest> {
    match name {
        "sha1" => Ok(ManifestDigest::Sha1),
        "sha256" => Ok(ManifestDigest::Sha256),
        "sha512" => Ok(ManifestDigest::Sha512),
        other => bail!("--manifest-digest {other}: use sha1, sha256 or sha512"),
    }
}

pub async fn export(client: &Client, args: VmExportArgs) -> Result<Outcome> {
    let format = match args.format.as_str() {
        "libvirt" => None,
        "ova" => Some(VmPackageFormat::Ova),
        "ovf" => Some(VmPackageFormat::Ovf),
        "vmx" => Some(VmPackageFormat::Vmx),
        "raw" => Some(VmPackageFormat::Raw),
        other => bail!("--format {other}: use libvirt, ova, ovf, vmx or raw"),
    };
    let Some(format) = format else {
        if args.to.is_some() {
            bail!("--to is for --format ova, ovf, vmx or raw; a libvirt XML goes to stdout or -o FILE");
        }
        let xml = client
            .get_text(&format!("/v1/instances/{}/export?format=libvirt", encode(&args.name)))
            .await?;
        match args.output {
            Some(path) => std::fs::write(&path, xml).with_context(|| format!("writing {}", path.display()))?,
            None => print!("{xml}"),
        }
        return Ok(Outcome::Success);
    };
    let Some(to) = args.to else {
        bail!(
            "--format {} needs --to PATH (ova: a file, ovf/vmx: a directory, raw: a file or a device)",
            args.format
        );
    };
    let to: PathBuf = if to.is_absolute() {
        to
    } else {
        std::env::current_dir().context("the current directory")?.join(to)
    };
    let spinner = working(format!("writing {} to {}", args.name, to.display()));
    let reply: Result<VmExportResponse, _> = client
        .post(
            &format!("/v1/instances/{}/export", encode(&args.name)),
            &VmExportRequest {
                format,
                to: to.display().to_string(),
                force: args.force,
                manifest_digest: args.manifest_digest.as_deref().map(manifest_digest).transpose()?,
            },
        )
        .await;
    spinner.finish_and_clear();
    let reply = reply?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(Outcome::Success);
    }
    for setting in &reply.not_carried_over {
        eprintln!("not carried over: {setting}");
    }
    for file in &reply.files {
        println!("{file}");
    }
    Ok(Outcome::Success)
}
