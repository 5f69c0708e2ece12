//! Typed quantities parsed from user input: byte sizes ("64m", "1.5g"), CPU counts ("0.5")
//! and the "unlimited" keyword. Parsing happens once at the edge so inner code never sees
//! raw strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("empty value")]
    Empty,
    #[error("'{0}' is not a size; use a number with an optional unit b, k, m, g or t (for example 64m or 1.5g)")]
    BadSize(String),
    #[error("'{0}' is not a CPU count; use a positive number such as 0.5 or 2")]
    BadCpus(String),
    #[error("'{0}' is not a positive whole number")]
    BadCount(String),
    #[error("'{0}' is not a bandwidth; use a number with kbit, mbit or gbit (for example 100mbit), at least 1kbit")]
    BadBandwidth(String),
    #[error("'{0}' is too large")]
    TooLarge(String),
}

/// A size in bytes. Accepts docker-style suffixes (binary multiples, case-insensitive,
/// with optional trailing "b"/"ib").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = QuantityError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim().to_ascii_lowercase();
        if text.is_empty() {
            return Err(QuantityError::Empty);
        }
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let multiplier: u64 = match unit.trim() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(QuantityError::BadSize(input.to_string())),
        };
        let value: f64 = number.parse().map_err(|_| QuantityError::BadSize(input.to_string()))?;
        if !value.is_finite() || value < 0.0 {
            return Err(QuantityError::BadSize(input.to_string()));
        }
        let bytes = value * multiplier as f64;
        if bytes > u64::MAX as f64 / 2.0 {
            return Err(QuantityError::TooLarge(input.to_string()));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (name, size) in UNITS {
            if self.0 >= size {
                let value = self.0 as f64 / size as f64;
                return if (value.fract()).abs() < 1e-9 {
                    write!(f, "{}{}", value as u64, name)
                } else {
                    write!(f, "{value:.2}{name}")
                };
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// CPU capacity in thousandths of a CPU (Kubernetes "millicpu"), shown as a decimal count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MilliCpus(pub u64);

impl MilliCpus {
    pub fn from_cpus(cpus: u64) -> Self {
        MilliCpus(cpus * 1000)
    }
    pub fn as_cpus(self) -> f64 {
        self.0 as f64 / 1000.0
    }
    /// Whole vCPUs needed to run this much CPU (a VM cannot have half a vCPU).
    pub fn ceil_cpus(self) -> u64 {
        self.0.div_ceil(1000)
    }
}

impl FromStr for MilliCpus {
    type Err = QuantityError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        if text.is_empty() {
            return Err(QuantityError::Empty);
        }
        let (number, scale) = match text.strip_suffix('m') {
            Some(milli) => (milli, 1.0),
            None => (text, 1000.0),
        };
        let value: f64 = number.parse().map_err(|_| QuantityError::BadCpus(input.to_string()))?;
        if !value.is_finite() || value <= 0.0 {
            return Err(QuantityError::BadCpus(input.to_string()));
        }
        let milli = (value * scale).round();
        if milli < 1.0 {
            return Err(QuantityError::BadCpus(input.to_string()));
        }
        if milli > 1e9 {
            return Err(QuantityError::TooLarge(input.to_string()));
        }
        Ok(MilliCpus(milli as u64))
    }
}

impl fmt::Display for MilliCpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_cpus())
    }
}

impl Serialize for MilliCpus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_cpus())
    }
}

impl<'de> Deserialize<'de> for MilliCpus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let cpus = f64::deserialize(deserializer)?;
        if !cpus.is_finite() || cpus <= 0.0 || cpus > 1e6 {
            return Err(serde::de::Error::custom(format!(
                "cpus must be a positive number, got {cpus}"
            )));
        }
        Ok(MilliCpus((cpus * 1000.0).round().max(1.0) as u64))
    }
}

/// Network bandwidth in bits per second, as `tc` writes it: "100mbit", "10gbit", "1.5gbit",
/// "800kbit" (decimal multiples; "bps" means bytes per second as in tc).
pub fn parse_bandwidth(input: &str) -> Result<u64, QuantityError> {
    let text = input.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: f64 = match unit.trim() {
        "" | "bit" => 1.0,
        "kbit" | "k" => 1e3,
        "mbit" | "m" => 1e6,
        "gbit" | "g" => 1e9,
        "tbit" | "t" => 1e12,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return Err(QuantityError::BadBandwidth(input.to_string())),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| QuantityError::BadBandwidth(input.to_string()))?;
    let bits = value * multiplier;
    if !bits.is_finite() || bits < 1000.0 {
        return Err(QuantityError::BadBandwidth(input.to_string()));
    }
    Ok(bits.round() as u64)
}

/// A positive whole count such as a pids limit.
pub fn parse_count(input: &str) -> Result<u64, QuantityError> {
    let text = input.trim();
    match text.parse::<u64>() {
        Ok(0) | Err(_) => Err(QuantityError::BadCount(input.to_string())),
        Ok(n) => Ok(n),
    }
}

/// A limit as the user asked for it: a value, or explicitly none. "Not given" is the
/// absence of this type (an `Option`), which means "apply the daemon's default".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSetting<T> {
    Unlimited,
    Value(T),
}

impl<T> LimitSetting<T> {
    pub fn value(self) -> Option<T> {
        match self {
            LimitSetting::Unlimited => None,
            LimitSetting::Value(v) => Some(v),
        }
    }
}

impl<T: FromStr> LimitSetting<T> {
    pub fn parse(input: &str) -> Result<Self, T::Err> {
        if input.trim().eq_ignore_ascii_case("unlimited") {
            Ok(LimitSetting::Unlimited)
        } else {
            input.parse().map(LimitSetting::Value)
        }
    }
}

impl<T: Serialize> Serialize for LimitSetting<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LimitSetting::Unlimited => serializer.serialize_str("unlimited"),
            LimitSetting::Value(v) => v.serialize(serializer),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for LimitSetting<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Keyword(String),
            Value(T),
        }
        match Raw::<T>::deserialize(deserializer)? {
            Raw::Keyword(word) if word == "unlimited" => Ok(LimitSetting::Unlimited),
            Raw::Keyword(word) => Err(serde::de::Error::custom(format!(
                "expected a number or \"unlimited\", got \"{word}\""
            ))),
            Raw::Value(v) => Ok(LimitSetting::Value(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!("64m".parse::<ByteSize>(), Ok(ByteSize(64 << 20)));
        assert_eq!("1.5G".parse::<ByteSize>(), Ok(ByteSize(3 << 29)));
        assert_eq!("512".parse::<ByteSize>(), Ok(ByteSize(512)));
        assert_eq!("10gib".parse::<ByteSize>(), Ok(ByteSize(10 << 30)));
        assert!("12q".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
        assert!("-1m".parse::<ByteSize>().is_err());
        assert!("m".parse::<ByteSize>().is_err());
    }

    #[test]
    fn parses_cpus() {
        assert_eq!("0.5".parse::<MilliCpus>(), Ok(MilliCpus(500)));
        assert_eq!("2".parse::<MilliCpus>(), Ok(MilliCpus(2000)));
        assert_eq!("250m".parse::<MilliCpus>(), Ok(MilliCpus(250)));
        assert!("0".parse::<MilliCpus>().is_err());
        assert!("abc".parse::<MilliCpus>().is_err());
        assert_eq!(MilliCpus(1500).ceil_cpus(), 2);
    }

    #[test]
    fn limit_setting_round_trips() {
        let v: LimitSetting<u64> = serde_json::from_str("\"unlimited\"").unwrap();
        assert_eq!(v, LimitSetting::Unlimited);
        let v: LimitSetting<u64> = serde_json::from_str("42").unwrap();
        assert_eq!(v, LimitSetting::Value(42));
        assert!(serde_json::from_str::<LimitSetting<u64>>("\"lots\"").is_err());
        assert_eq!(
            LimitSetting::<ByteSize>::parse("unlimited"),
            Ok(LimitSetting::Unlimited)
        );
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(parse_bandwidth("100mbit"), Ok(100_000_000));
        assert_eq!(parse_bandwidth("10Gbit"), Ok(10_000_000_000));
        assert_eq!(parse_bandwidth("1mbps"), Ok(8_000_000));
        assert!(parse_bandwidth("fast").is_err());
        assert!(parse_bandwidth("10").is_err());
    }
}
