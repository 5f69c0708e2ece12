//! Signal names as users type them (`TERM`, `SIGKILL`, `9`), mapped to Linux numbers.

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// Parses a signal name or number; the error says what is accepted.
pub fn parse_signal(input: &str) -> Result<i32, String> {
    let text = input.trim();
    if let Ok(number) = text.parse::<i32>() {
        if (1..=64).contains(&number) {
            return Ok(number);
        }
        return Err(format!("signal {number} is out of range 1-64"));
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, number)| *number)
        .ok_or_else(|| format!("unknown signal '{input}'; use a name such as TERM or KILL, or a number"))
}

/// The exact form the API takes (`SIGNAL_PATTERN`): a listed name, with or without `SIG`, or
/// a number 1-64 without sign or leading zeros. The CLI reads what users type with
/// `parse_signal` and sends the number.
pub fn parse_api_signal(input: &str) -> Result<i32, String> {
    let canonical_number = !input.starts_with('0') && input.bytes().all(|b| b.is_ascii_digit());
    let name = input.strip_prefix("SIG").unwrap_or(input);
    let canonical_name = SIGNALS.iter().any(|(n, _)| *n == name);
    if !input.is_empty() && (canonical_number || canonical_name) {
        return parse_signal(input);
    }
    Err(format!(
        "signal '{input}': give a name such as TERM or SIGKILL (upper case) or a number 1-64"
    ))
}

/// The JSON-schema pattern of `parse_api_signal`'s input.
pub const SIGNAL_PATTERN: &str = "^((SIG)?(HUP|INT|QUIT|ILL|TRAP|ABRT|BUS|FPE|KILL|USR1|SEGV|USR2|PIPE|ALRM|TERM|STKFLT|CHLD|CONT|STOP|TSTP|TTIN|TTOU|URG|XCPU|XFSZ|VTALRM|PROF|WINCH|IO|PWR|SYS)|[1-9]|[1-5][0-9]|6[0-4])$";

pub fn signal_name(number: i32) -> Option<&'static str> {
    SIGNALS.iter().find(|(_, n)| *n == number).map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("sigkill"), Ok(9));
        assert_eq!(parse_signal("2"), Ok(2));
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
        assert_eq!(signal_name(9), Some("KILL"));
    }

    #[test]
    fn the_api_takes_one_spelling() {
        assert_eq!(parse_api_signal("TERM"), Ok(15));
        assert_eq!(parse_api_signal("SIGKILL"), Ok(9));
        assert_eq!(parse_api_signal("64"), Ok(64));
        for refused in ["term", " TERM", "09", "+9", "65", "0", "", "SIG", "SIGSIGTERM"] {
            assert!(parse_api_signal(refused).is_err(), "{refused:?}");
        }
        // The pattern lists exactly the names that parse.
        let listed = SIGNAL_PATTERN
            .split_once("(SIG)?(")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(names, _)| names.split('|').collect::<Vec<_>>())
            .unwrap();
        assert_eq!(listed, SIGNALS.iter().map(|(name, _)| *name).collect::<Vec<_>>());
        for (name, number) in SIGNALS {
            assert_eq!(parse_api_signal(&format!("SIG{name}")), Ok(*number));
        }
    }
}
