//! Shared vocabulary: the small words of the file format that every phase names.
//!
//! A leaf module (it uses nothing of prun), so that `syntax` (the file as written),
//! `model`, `plan`, `runtime` and `ctl` can all speak of a queue's `delivery` or a
//! stage's `on_failure` without depending on each other. It also holds the one
//! duration parser of prun: the file's `timeout: 5s` and `prun ctl ... --timeout 5s`
//! read durations the same way.

use std::time::Duration;

/// When a dependency counts as met (`after: {stage: CONDITION}`, SPEC 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Started,
    Ready,
    Succeeded,
    Completed,
}

/// How a queue hands records to its readers (SPEC 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Each record to exactly one reader instance (a work queue).
    Shared,
    /// Every record to every reader instance.
    Broadcast,
}

/// How a queue's byte stream is cut into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Lines,
    Nul,
    Bytes,
}

impl Framing {
    /// The record delimiter, if any.
    pub fn delimiter(self) -> Option<u8> {
        match self {
            Framing::Lines => Some(b'\n'),
            Framing::Nul => Some(0),
            Framing::Bytes => None,
        }
    }
}

/// In which order a queue delivers its writers' records (SPEC 4.2, `order:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// As records arrive, whatever writer they come from (the default).
    #[default]
    Arrival,
    /// Grouped by writer, in writer order: stages in file order, then instance index,
    /// then foreach item index (`cat <(a) <(b)`, GNU parallel `--keep-order`).
    Writers,
}

/// What a failed instance does to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Stop,
    Continue,
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Never,
    OnFailure,
    Always,
}

/// `halt.when` of a foreach stage (GNU parallel `--halt soon|now`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltWhen {
    /// Stop starting new items; the running ones finish.
    Soon,
    /// Stop starting new items and stop the running ones too.
    Now,
}

/// A `halt` threshold: a number of items, or a percentage of all the items.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// `fail: 3`: once 3 items failed (succeeded).
    Count(u64),
    /// `fail: "10%"`: once 10 % of the stage's items failed (succeeded); 0 < p ≤ 100.
    Percent(f64),
}

/// Parse a duration as prun writes them everywhere: `250ms`, `5s`, `2m`, `1h`,
/// `1h 30m` (humantime), or a bare number of seconds (`30`, `0.25`).
/// Negative, non-finite and absurdly large values (over 10^12 s) are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return seconds(secs).ok_or_else(|| format!("invalid duration `{text}`"));
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration `{text}`: {e}"))
}

/// A number of seconds as a duration, if it is one (finite, ≥ 0, < 10^12).
pub fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..1e12).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration(" 0.25 "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("1e300").is_err());
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
