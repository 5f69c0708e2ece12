//! Human output: aligned tables, relative times, sizes and process trees.

use berth_model::api::ProcessNode;
use berth_model::ByteSize;
use chrono::{DateTime, Utc};

/// Prints rows as left-aligned columns separated by three spaces (like `docker ps`).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{:<width$}", c, width = widths[i])
                }
            })
            .collect();
        println!("{}", text.join("   ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// "3 seconds", "5 minutes", "2 hours", "4 days".
pub fn human_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (value, unit) = match seconds {
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86400 => (s / 3600, "hour"),
        s => (s / 86400, "day"),
    };
    if value == 1 {
        format!("1 {unit}")
    } else {
        format!("{value} {unit}s")
    }
}

pub fn ago(time: DateTime<Utc>) -> String {
    format!("{} ago", human_duration((Utc::now() - time).num_seconds()))
}

pub fn size(bytes: u64) -> String {
    ByteSize(bytes).to_string()
}

pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Prints processes the way `ps auxf` does: USER PID %CPU RSS STAT COMMAND with the
/// command indented under its parent.
pub fn print_process_tree(roots: &[ProcessNode], indent: &str) {
    println!(
        "{indent}{:<10} {:>7} {:>5} {:>9} {:<4} COMMAND",
        "USER", "PID", "%CPU", "RSS", "STAT"
    );
    fn walk(node: &ProcessNode, depth: usize, indent: &str) {
        let branch = if depth == 0 {
            String::new()
        } else {
            format!("{}\\_ ", "    ".repeat(depth - 1))
        };
        println!(
            "{indent}{:<10} {:>7} {:>5.1} {:>9} {:<4} {}{}",
            truncate(&node.user, 10),
            node.pid,
            node.cpu_percent,
            size(node.rss_bytes),
            node.state,
            branch,
            node.command
        );
        for child in &node.children {
            walk(child, depth + 1, indent);
        }
    }
    for root in roots {
        walk(root, 0, indent);
    }
}
