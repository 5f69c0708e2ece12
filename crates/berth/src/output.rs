//! Human output: aligned tables, relative times, sizes and process trees.

use std::fmt::Write as _;

use berth_model::api::ProcessNode;
use berth_model::ByteSize;
use chrono::{DateTime, Utc};

/// Prints rows as left-aligned columns separated by three spaces (like `docker ps`). The
/// whole table goes out in one write: stdout is line-buffered, and a write per row was
/// 1,000 system calls for `ps` with 1,000 instances.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let last = cells.len().saturating_sub(1);
        let start = out.len();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("   ");
            }
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{:<width$}", cell, width = widths.get(i).copied().unwrap_or(0));
            }
        }
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
        out.push('\n');
    };
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
    print!("{out}");
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
    let mut out = String::new();
    write_process_tree(&mut out, roots, indent);
    print!("{out}");
}

/// What `print_process_tree` prints, appended to `out` (so that a listing of many trees
/// goes out in one write).
pub fn write_process_tree(out: &mut String, roots: &[ProcessNode], indent: &str) {
    let _ = writeln!(
        out,
        "{indent}{:<10} {:>7} {:>5} {:>9} {:<4} COMMAND",
        "USER", "PID", "%CPU", "RSS", "STAT"
    );
    fn walk(out: &mut String, node: &ProcessNode, depth: usize, indent: &str) {
        let branch = if depth == 0 {
            String::new()
        } else {
            format!("{}\\_ ", "    ".repeat(depth - 1))
        };
        let _ = writeln!(
            out,
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
            walk(out, child, depth + 1, indent);
        }
    }
    for root in roots {
        walk(out, root, 0, indent);
    }
}
