//! Image commands: import, pull, push (with progress bars), ls, inspect, rm, tag.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};

use anyhow::{bail, Context, Result};
use berth_client::Client;
use berth_model::api::{ImportImageRequest, ProgressEvent, RegistryRequest, TagImageRequest};
use berth_model::image::ImageRecord;
use berth_model::instance::short_id;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::cli::*;
use crate::output::{ago, print_table, size};
use crate::{encode, Outcome};

/// Familiar form of a stored tag: `busybox:latest` for `docker.io/library/busybox:latest`.
fn familiar(tag: &str) -> String {
    tag.strip_prefix("docker.io/library/")
        .or_else(|| tag.strip_prefix("docker.io/"))
        .unwrap_or(tag)
        .to_string()
}

/// Renders a progress stream: bars on a terminal, plain lines otherwise. Returns the
/// final event's image reference.
async fn follow_progress(client: &Client, path: &str, body: Vec<u8>) -> Result<String> {
    let mut lines = client.stream(hyper::Method::POST, path, Some(body)).await?.lines();
    let fancy = std::io::stderr().is_terminal();
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut by_id: HashMap<String, ProgressBar> = HashMap::new();
    while let Some(line) = lines.next_line().await? {
        let Ok(event) = serde_json::from_slice::<ProgressEvent>(&line) else {
            continue;
        };
        match event {
            ProgressEvent::Started { id, total_bytes } => {
                if fancy {
                    let bar = bars.add(ProgressBar::new(total_bytes.unwrap_or(0)));
                    bar.set_style(style.clone());
                    bar.set_prefix(short_id(&id).to_string());
                    by_id.insert(id, bar);
                } else {
                    eprintln!("{}: started", short_id(&id));
                }
            }
            ProgressEvent::Progress { id, current_bytes } => {
                if let Some(bar) = by_id.get(&id) {
                    bar.set_position(current_bytes);
                }
            }
            ProgressEvent::Done { id, note } => match by_id.get(&id) {
                Some(bar) => {
                    if bar.length().unwrap_or(0) > 0 {
                        bar.set_position(bar.length().unwrap_or(0));
                    }
                    bar.finish_with_message(note);
                }
                None => eprintln!("{}: {note}", short_id(&id)),
            },
            ProgressEvent::Message { text } => {
                if fancy {
                    let _ = bars.println(&text);
                } else {
                    eprintln!("{text}");
                }
            }
            ProgressEvent::Finished { image_id, reference } => {
                for bar in by_id.values() {
                    if !bar.is_finished() {
                        bar.finish();
                    }
                }
                return Ok(if reference.is_empty() {
                    image_id
                } else {
                    format!("{} ({})", familiar(&reference), short_id(&image_id))
                });
            }
            ProgressEvent::Failed { message } => {
                for bar in by_id.values() {
                    bar.abandon();
                }
                bail!("{message}");
            }
        }
    }
    bail!("the daemon ended the stream without saying how the job went")
}

pub async fn import(client: &Client, args: ImportArgs) -> Result<Outcome> {
    let path = std::fs::canonicalize(&args.path).with_context(|| format!("{}", args.path.display()))?;
    let request = ImportImageRequest {
        path: path.display().to_string(),
        tag: args.tag.clone(),
        vm: args.vm,
        format: args.format.clone(),
        allow_device: args.allow_device,
        compress: args.compress,
        firmware: args.firmware.clone(),
    };
    let done = follow_progress(client, "/v1/images/import", serde_json::to_vec(&request)?).await?;
    println!("imported {done}");
    Ok(Outcome::Success)
}

fn registry_request(args: &RegistryArgs) -> Result<RegistryRequest> {
    let password = if args.password_stdin {
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .context("reading the password from stdin")?;
        Some(password.trim_end_matches(['\n', '\r']).to_string())
    } else {
        None
    };
    if password.is_some() && args.username.is_none() {
        bail!("--password-stdin needs --username");
    }
    Ok(RegistryRequest {
        reference: args.reference.clone(),
        insecure: args.insecure,
        username: args.username.clone(),
        password,
    })
}

pub async fn pull(client: &Client, args: RegistryArgs) -> Result<Outcome> {
    let body = serde_json::to_vec(&registry_request(&args)?)?;
    let done = follow_progress(client, "/v1/images/pull", body).await?;
    println!("pulled {done}");
    Ok(Outcome::Success)
}

pub async fn push(client: &Client, args: RegistryArgs) -> Result<Outcome> {
    let body = serde_json::to_vec(&registry_request(&args)?)?;
    follow_progress(client, "/v1/images/push", body).await?;
    println!("pushed {}", args.reference);
    Ok(Outcome::Success)
}

pub async fn list(client: &Client, args: ImageLsArgs) -> Result<Outcome> {
    let images: Vec<ImageRecord> = client.get("/v1/images").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(Outcome::Success);
    }
    if args.quiet {
        for image in &images {
            println!("{}", short_id(&image.id));
        }
        return Ok(Outcome::Success);
    }
    let mut rows = Vec::new();
    for image in &images {
        let names: Vec<String> = if image.tags.is_empty() {
            vec!["<none>".into()]
        } else {
            image.tags.iter().map(|t| familiar(t)).collect()
        };
        for name in names {
            rows.push(vec![
                name,
                short_id(&image.id).to_string(),
                image.layers.len().to_string(),
                ago(image.created_at),
                size(image.size_bytes),
            ]);
        }
    }
    print_table(&["IMAGE", "IMAGE ID", "LAYERS", "CREATED", "SIZE"], &rows);
    Ok(Outcome::Success)
}

pub async fn inspect(client: &Client, args: ImageRefsArgs) -> Result<Outcome> {
    let mut found = Vec::new();
    for reference in &args.references {
        let image: serde_json::Value = client
            .get(&format!("/v1/images/inspect?reference={}", encode(reference)))
            .await?;
        found.push(image);
    }
    if found.len() == 1 {
        println!("{}", serde_json::to_string_pretty(&found[0])?);
    } else {
        println!("{}", serde_json::to_string_pretty(&found)?);
    }
    Ok(Outcome::Success)
}

pub async fn remove(client: &Client, args: ImageRmArgs) -> Result<Outcome> {
    let mut failed = false;
    for reference in &args.references {
        let force = if args.force { "&force=true" } else { "" };
        match client
            .delete(&format!("/v1/images?reference={}{force}", encode(reference)))
            .await
        {
            Ok(body) => {
                let reply: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                for tag in reply["untagged"].as_array().into_iter().flatten() {
                    println!("untagged: {}", familiar(tag.as_str().unwrap_or_default()));
                }
                if reply["deleted"].as_bool() == Some(true) {
                    println!("deleted: {reference}");
                }
            }
            Err(e) => {
                eprintln!("berth: error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { Outcome::Failure } else { Outcome::Success })
}

pub async fn tag(client: &Client, args: TagArgs) -> Result<Outcome> {
    let _: ImageRecord = client
        .post(
            "/v1/images/tag",
            &TagImageRequest {
                source: args.source,
                target: args.target,
            },
        )
        .await?;
    Ok(Outcome::Success)
}
