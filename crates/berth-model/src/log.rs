//! How much of an instance's output berth keeps, with the caps of Docker's `local` log
//! driver: `--log-opt max-size=20m --log-opt max-file=5`, the daemon's defaults in its
//! config. The supervisor rotates `container.log` (and a VM's console) at `max-size` and
//! keeps `max-file` files, the current one included.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;

use crate::quantity::ByteSize;

/// The smallest `max-size`: one log record (16 KiB of output, JSON-escaped) always fits.
pub const MIN_LOG_FILE_BYTES: u64 = 128 << 10;
/// The most files `max-file` may keep.
pub const MAX_LOG_FILES: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LogOptionError {
    #[error("log option '{0}' is not KEY=VALUE; use max-size=SIZE or max-file=COUNT")]
    NotKeyValue(String),
    #[error("log option '{0}' is unknown; berth knows max-size=SIZE and max-file=COUNT")]
    Unknown(String),
    #[error("log option max-size={value}: {reason}")]
    BadSize { value: String, reason: String },
    #[error("log option max-file={value}: use a count of files from 1 to {MAX_LOG_FILES}")]
    BadCount { value: String },
}

/// One `--log-opt KEY=VALUE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOption {
    MaxSize(u64),
    MaxFiles(u32),
}

fn check_size(bytes: u64, value: &str) -> Result<u64, LogOptionError> {
    if bytes < MIN_LOG_FILE_BYTES {
        return Err(LogOptionError::BadSize {
            value: value.to_string(),
            reason: format!("at least {} (128k) per file", ByteSize(MIN_LOG_FILE_BYTES)),
        });
    }
    Ok(bytes)
}

fn check_count(count: u32, value: &str) -> Result<u32, LogOptionError> {
    if count == 0 || count > MAX_LOG_FILES {
        return Err(LogOptionError::BadCount {
            value: value.to_string(),
        });
    }
    Ok(count)
}

impl FromStr for LogOption {
    type Err = LogOptionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| LogOptionError::NotKeyValue(text.to_string()))?;
        match key {
            "max-size" => {
                let size: ByteSize =
                    value
                        .parse()
                        .map_err(|e: crate::quantity::QuantityError| LogOptionError::BadSize {
                            value: value.to_string(),
                            reason: e.to_string(),
                        })?;
                check_size(size.bytes(), value).map(LogOption::MaxSize)
            }
            "max-file" => {
                let count: u32 = value.trim().parse().map_err(|_| LogOptionError::BadCount {
                    value: value.to_string(),
                })?;
                check_count(count, value).map(LogOption::MaxFiles)
            }
            _ => Err(LogOptionError::Unknown(key.to_string())),
        }
    }
}

/// The log caps asked for (`--log-opt`); absent values take the daemon's defaults. An
/// instance records the values in force when it was created, as Docker does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogOptions {
    /// Size at which a log file is rotated (`max-size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 18446744073709551615u64)]
    pub max_size_bytes: Option<u64>,
    /// Files kept, the current one included (`max-file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 4294967295u64)]
    pub max_files: Option<u32>,
}

impl LogOptions {
    pub fn from_options(options: &[LogOption]) -> LogOptions {
        let mut result = LogOptions::default();
        for option in options {
            match *option {
                LogOption::MaxSize(bytes) => result.max_size_bytes = Some(bytes),
                LogOption::MaxFiles(count) => result.max_files = Some(count),
            }
        }
        result
    }

    /// The caps in force: these options over `defaults`, each checked.
    pub fn resolve(&self, defaults: LogLimits) -> Result<LogLimits, LogOptionError> {
        let limits = LogLimits {
            max_size_bytes: self.max_size_bytes.unwrap_or(defaults.max_size_bytes),
            max_files: self.max_files.unwrap_or(defaults.max_files),
        };
        limits.check()?;
        Ok(limits)
    }
}

/// The caps a supervisor enforces on an instance's log files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLimits {
    pub max_size_bytes: u64,
    pub max_files: u32,
}

impl Default for LogLimits {
    /// Docker's `local` driver: 20 MiB per file, 5 files.
    fn default() -> Self {
        LogLimits {
            max_size_bytes: 20 << 20,
            max_files: 5,
        }
    }
}

impl LogLimits {
    pub fn check(&self) -> Result<(), LogOptionError> {
        check_size(self.max_size_bytes, &self.max_size_bytes.to_string())?;
        check_count(self.max_files, &self.max_files.to_string())?;
        Ok(())
    }

    /// The most disk all files of one log take.
    pub fn total_bytes(&self) -> u64 {
        self.max_size_bytes.saturating_mul(self.max_files as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_style_options() {
        let options: Vec<LogOption> = ["max-size=20m", "max-file=3"]
            .iter()
            .map(|o| o.parse().unwrap())
            .collect();
        let resolved = LogOptions::from_options(&options)
            .resolve(LogLimits::default())
            .unwrap();
        assert_eq!(
            resolved,
            LogLimits {
                max_size_bytes: 20 << 20,
                max_files: 3
            }
        );
        assert_eq!(
            LogOptions::default().resolve(LogLimits::default()).unwrap(),
            LogLimits::default()
        );
    }

    #[test]
    fn refuses_bad_options_naming_them() {
        for (text, named) in [
            ("max-size=12q", "max-size=12q"),
            ("max-size=1k", "max-size=1k"),
            ("max-file=0", "max-file=0"),
            ("max-file=many", "max-file=many"),
            ("mode=non-blocking", "'mode'"),
            ("max-size", "'max-size'"),
        ] {
            let error = text.parse::<LogOption>().unwrap_err().to_string();
            assert!(error.contains(named), "{text}: {error}");
        }
        let tiny = LogOptions {
            max_size_bytes: Some(10),
            max_files: None,
        };
        assert!(tiny.resolve(LogLimits::default()).is_err());
    }
}
