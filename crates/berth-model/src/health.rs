//! Health checks, as Docker and Compose define them (`--health-cmd`, `healthcheck:`): a
//! command the instance's node runs inside it every interval; its exit code says healthy
//! (0) or not. The spec is what was asked; `Health` is what the node observed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Docker's defaults: 30 s between checks, 30 s for one to answer, three failures in a row
/// make an instance unhealthy, no start period.
pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_RETRIES: u32 = 3;
/// Bounds on what may be asked: a check more often than every 100 ms would be load, not a
/// check; a day is far beyond any sensible interval.
pub const MIN_PERIOD_MS: u64 = 100;
pub const MAX_PERIOD_MS: u64 = 24 * 3600 * 1000;
pub const MAX_RETRIES: u32 = 1000;
/// Output kept per probe, as Docker keeps (its 4 KiB), and probes kept.
pub const MAX_OUTPUT_BYTES: usize = 4096;
pub const KEPT_PROBES: usize = 5;

/// A health check as the API takes it: `test` in Docker's form (`["CMD", "prog", "arg"]`,
/// `["CMD-SHELL", "command line"]` or `["NONE"]`), times in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthCheckRequest {
    #[schema(min_items = 1)]
    pub test: Vec<String>,
    /// Between the end of one check and the start of the next (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 86400000)]
    pub interval_ms: Option<u64>,
    /// A check running longer fails and is killed (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 86400000)]
    pub timeout_ms: Option<u64>,
    /// Failures in a row that make the instance unhealthy (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub retries: Option<u32>,
    /// After a start, failures do not count for this long (a success still counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400000)]
    pub start_period_ms: Option<u64>,
}

/// The health check an instance runs with, resolved: the command as exec runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthCheck {
    /// What runs inside the instance (`CMD-SHELL` became `/bin/sh -c`).
    pub command: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

/// Why a health check request cannot be used: the field and what to give instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckError {
    pub field: &'static str,
    pub message: String,
}

impl HealthCheckRequest {
    /// The check to run, or `None` for `["NONE"]` (no check, also none from the image).
    pub fn resolve(&self) -> Result<Option<HealthCheck>, HealthCheckError> {
        let fail = |field: &'static str, message: String| Err(HealthCheckError { field, message });
        let command = match self.test.split_first() {
            None => return fail("healthcheck.test", "give the check's command: [\"CMD\", PROGRAM, ARGS...], [\"CMD-SHELL\", COMMAND LINE] or [\"NONE\"]".into()),
            Some((first, rest)) => match first.as_str() {
                "NONE" if rest.is_empty() => return Ok(None),
                "NONE" => return fail("healthcheck.test", "[\"NONE\"] takes nothing after it".into()),
                "CMD" => rest.to_vec(),
                "CMD-SHELL" => match rest {
                    [line] => vec!["/bin/sh".into(), "-c".into(), line.clone()],
                    _ => return fail("healthcheck.test", "[\"CMD-SHELL\", COMMAND LINE] takes exactly one string after CMD-SHELL".into()),
                },
                _ => return fail("healthcheck.test", format!("'{first}' is not CMD, CMD-SHELL or NONE; write [\"CMD\", \"{first}\", ...] or [\"CMD-SHELL\", \"{first} ...\"]")),
            },
        };
        if command.first().is_none_or(|program| program.is_empty()) {
            return fail("healthcheck.test", "the check's command is empty".into());
        }
        if command.iter().any(|arg| arg.contains('\0')) {
            return fail("healthcheck.test", "the check's command holds a NUL byte".into());
        }
        let period = |field: &'static str, flag: &str, asked: Option<u64>, default: u64| match asked {
            None => Ok(default),
            Some(ms) if (MIN_PERIOD_MS..=MAX_PERIOD_MS).contains(&ms) => Ok(ms),
            Some(ms) => Err(HealthCheckError {
                field,
                message: format!(
                    "the health check's {flag} of {ms} ms is outside 100ms to 24h; give a duration in that range"
                ),
            }),
        };
        let interval_ms = period(
            "healthcheck.interval_ms",
            "interval (--health-interval)",
            self.interval_ms,
            DEFAULT_INTERVAL_MS,
        )?;
        let timeout_ms = period(
            "healthcheck.timeout_ms",
            "timeout (--health-timeout)",
            self.timeout_ms,
            DEFAULT_TIMEOUT_MS,
        )?;
        let start_period_ms = match self.start_period_ms {
            None | Some(0) => 0,
            Some(ms) => period(
                "healthcheck.start_period_ms",
                "start period (--health-start-period)",
                Some(ms),
                0,
            )?,
        };
        let retries = match self.retries {
            None => DEFAULT_RETRIES,
            Some(n @ 1..=MAX_RETRIES) => n,
            Some(n) => {
                return fail(
                    "healthcheck.retries",
                    format!("the health check's retries (--health-retries) of {n} is outside 1 to {MAX_RETRIES}"),
                )
            }
        };
        Ok(Some(HealthCheck {
            command,
            interval_ms,
            timeout_ms,
            retries,
            start_period_ms,
        }))
    }
}

/// A duration as Docker's flags and Compose files write it (`30s`, `1m30s`, `500ms`; a
/// bare number is seconds, as Compose's older files have it), in milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return seconds
            .checked_mul(1000)
            .ok_or_else(|| format!("'{text}' seconds is too long"));
    }
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration like 30s, 1m30s or 500ms ({e})"))?;
    u64::try_from(duration.as_millis()).map_err(|_| format!("'{text}' is too long"))
}

/// Docker's three words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Started, not yet passed a check (and not failed `retries` in a row).
    Starting,
    Healthy,
    Unhealthy,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        })
    }
}

/// What the node observed of an instance's health since it last started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// Failed checks in a row (not counting those in the start period).
    pub failing_streak: u32,
    /// The last checks, oldest first.
    #[serde(default)]
    pub log: Vec<HealthProbe>,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthProbe {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The command's exit code; -1 when it timed out or could not run.
    pub exit_code: i32,
    /// The start of its output (stdout and stderr), at most 4 KiB.
    pub output: String,
}

impl Health {
    pub fn starting() -> Self {
        Health {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: Vec::new(),
        }
    }

    /// Counts one check (Docker's rules): a pass makes it healthy; a failure outside the
    /// start period adds to the streak, and `retries` in a row make it unhealthy.
    pub fn record(&mut self, probe: HealthProbe, check: &HealthCheck, in_start_period: bool) {
        if probe.exit_code == 0 {
            self.status = HealthStatus::Healthy;
            self.failing_streak = 0;
        } else if !in_start_period {
            self.failing_streak = self.failing_streak.saturating_add(1);
            if self.failing_streak >= check.retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.log.push(probe);
        if self.log.len() > KEPT_PROBES {
            let extra = self.log.len() - KEPT_PROBES;
            self.log.drain(..extra);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(exit_code: i32) -> HealthProbe {
        HealthProbe {
            start: Utc::now(),
            end: Utc::now(),
            exit_code,
            output: String::new(),
        }
    }

    #[test]
    fn docker_forms_resolve_and_bad_ones_name_the_field() {
        let shell = HealthCheckRequest {
            test: vec!["CMD-SHELL".into(), "wget -qO- localhost".into()],
            ..Default::default()
        };
        let check = shell.resolve().unwrap().unwrap();
        assert_eq!(check.command, ["/bin/sh", "-c", "wget -qO- localhost"]);
        assert_eq!(
            (check.interval_ms, check.timeout_ms, check.retries),
            (30_000, 30_000, 3)
        );
        let none = HealthCheckRequest {
            test: vec!["NONE".into()],
            ..Default::default()
        };
        assert_eq!(none.resolve().unwrap(), None);
        for (test, interval) in [
            (vec![], None),
            (vec!["true".to_string()], None),
            (vec!["CMD".to_string()], None),
            (vec!["CMD".to_string(), "true".into()], Some(5)),
        ] {
            let bad = HealthCheckRequest {
                test,
                interval_ms: interval,
                ..Default::default()
            };
            let error = bad.resolve().unwrap_err();
            assert!(error.field.starts_with("healthcheck."), "{error:?}");
        }
    }

    #[test]
    fn durations_read_as_docker_and_compose_write_them() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("5"), Ok(5_000));
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("-1s").is_err());
    }

    #[test]
    fn failures_count_after_the_start_period_and_a_pass_resets_them() {
        let check = HealthCheck {
            command: vec!["true".into()],
            interval_ms: 1000,
            timeout_ms: 1000,
            retries: 2,
            start_period_ms: 0,
        };
        let mut health = Health::starting();
        health.record(probe(1), &check, true);
        assert_eq!((health.status, health.failing_streak), (HealthStatus::Starting, 0));
        health.record(probe(1), &check, false);
        assert_eq!(health.status, HealthStatus::Starting);
        health.record(probe(1), &check, false);
        assert_eq!(health.status, HealthStatus::Unhealthy);
        health.record(probe(0), &check, false);
        assert_eq!((health.status, health.failing_streak), (HealthStatus::Healthy, 0));
        for _ in 0..10 {
            health.record(probe(0), &check, false);
        }
        assert_eq!(health.log.len(), KEPT_PROBES);
    }
}
