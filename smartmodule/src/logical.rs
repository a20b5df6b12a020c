//! Debezium's and Kafka Connect's logical types, from their wire form to the normalized
//! values of the CDC record. Pure functions, one per wire form.

use base64::Engine as _;
use chrono::{DateTime, Datelike, NaiveDate, Utc};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogicalError {
    #[error("invalid base64: {0}")]
    Base64(String),
    #[error("day {0} is outside the supported date range")]
    Date(i64),
    #[error("{0} is outside the supported timestamp range")]
    Timestamp(i64),
    #[error("time of day {0} is negative or past 24:00:00")]
    Time(i64),
    #[error("`{0}` is not an ISO-8601 timestamp with a zone")]
    Zoned(String),
    #[error("decimal scale {0} is beyond PostgreSQL's range")]
    DecimalScale(i32),
    #[error("decimal of {0} bytes is beyond PostgreSQL's range")]
    DecimalSize(usize),
}

const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

pub fn decode_base64(text: &str) -> Result<Vec<u8>, LogicalError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| LogicalError::Base64(e.to_string()))
}

/// PostgreSQL's `numeric` holds at most 131072 digits before the point and 16383 after it;
/// anything larger is not from PostgreSQL and would only cost time and memory.
pub const MAX_DECIMAL_SCALE: i32 = 16_383;
pub const MAX_DECIMAL_BYTES: usize = 64 * 1024;

/// Checks a decimal's scale and unscaled size against [`MAX_DECIMAL_SCALE`] and
/// [`MAX_DECIMAL_BYTES`], then formats it.
pub fn decimal(bytes: &[u8], scale: i32) -> Result<String, LogicalError> {
    if scale.unsigned_abs() > MAX_DECIMAL_SCALE as u32 {
        return Err(LogicalError::DecimalScale(scale));
    }
    if bytes.len() > MAX_DECIMAL_BYTES {
        return Err(LogicalError::DecimalSize(bytes.len()));
    }
    Ok(decimal_from_bytes(bytes, scale))
}

/// Kafka Connect's Decimal: the unscaled value as big-endian two's complement bytes.
pub fn decimal_from_bytes(bytes: &[u8], scale: i32) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let magnitude: Vec<u8> = if negative {
        twos_complement_negate(bytes)
    } else {
        bytes.to_vec()
    };
    let digits = magnitude_to_decimal(&magnitude);
    place_decimal_point(negative && digits != "0", &digits, scale)
}

/// The magnitude of a negative two's complement number: invert and add one.
fn twos_complement_negate(bytes: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = bytes.iter().map(|b| !b).collect();
    for byte in out.iter_mut().rev() {
        let (sum, carry) = byte.overflowing_add(1);
        *byte = sum;
        if !carry {
            break;
        }
    }
    out
}

/// Unsigned big-endian bytes to decimal digits, by repeated division by 10^9.
fn magnitude_to_decimal(bytes: &[u8]) -> String {
    let mut limbs: Vec<u32> = bytes.iter().map(|&b| u32::from(b)).collect();
    // limbs are base-256 digits; divide the whole number by 1e9 repeatedly.
    let mut chunks: Vec<u32> = Vec::new();
    let mut start = 0;
    loop {
        while limbs.get(start) == Some(&0) {
            start += 1;
        }
        if start == limbs.len() {
            break;
        }
        let mut remainder: u64 = 0;
        for limb in limbs[start..].iter_mut() {
            let acc = (remainder << 8) | u64::from(*limb);
            *limb = (acc / 1_000_000_000) as u32;
            remainder = acc % 1_000_000_000;
        }
        chunks.push(remainder as u32);
    }
    match chunks.split_last() {
        None => "0".to_owned(),
        Some((most, rest)) => {
            let mut s = most.to_string();
            for chunk in rest.iter().rev() {
                s.push_str(&format!("{chunk:09}"));
            }
            s
        }
    }
}

fn place_decimal_point(negative: bool, digits: &str, scale: i32) -> String {
    let sign = if negative { "-" } else { "" };
    if scale <= 0 {
        let zeros = if digits == "0" {
            String::new()
        } else {
            "0".repeat(scale.unsigned_abs() as usize)
        };
        return format!("{sign}{digits}{zeros}");
    }
    let scale = scale as usize;
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        format!("{sign}{int}.{frac}")
    } else {
        format!("{sign}0.{}{digits}", "0".repeat(scale - digits.len()))
    }
}

/// Days since 1970-01-01 to `YYYY-MM-DD`.
pub fn date_from_days(days: i64) -> Result<String, LogicalError> {
    let ce = days
        .checked_add(UNIX_EPOCH_DAYS_FROM_CE)
        .and_then(|d| i32::try_from(d).ok())
        .ok_or(LogicalError::Date(days))?;
    NaiveDate::from_num_days_from_ce_opt(ce)
        .map(|d| match d.year() {
            // what `%Y-%m-%d` writes, without parsing the format for every value
            year @ 0..=9999 => format!("{year:04}-{:02}-{:02}", d.month(), d.day()),
            _ => d.format("%Y-%m-%d").to_string(),
        })
        .ok_or(LogicalError::Date(days))
}

/// A time unit of Debezium's time and timestamp types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Millis,
    Micros,
    Nanos,
}

impl Unit {
    fn per_second(self) -> i64 {
        match self {
            Unit::Millis => 1_000,
            Unit::Micros => 1_000_000,
            Unit::Nanos => 1_000_000_000,
        }
    }
}

/// Time since midnight to `HH:MM:SS.ffffff` (nanoseconds: 9 digits). PostgreSQL allows
/// `24:00:00`, so this does not go through a clock type.
pub fn time_of_day(value: i64, unit: Unit) -> Result<String, LogicalError> {
    let per_second = unit.per_second();
    if value < 0 || value > 86_400 * per_second {
        return Err(LogicalError::Time(value));
    }
    let seconds = value / per_second;
    let fraction = value % per_second;
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    Ok(match unit {
        Unit::Nanos => format!("{h:02}:{m:02}:{s:02}.{fraction:09}"),
        Unit::Micros => format!("{h:02}:{m:02}:{s:02}.{fraction:06}"),
        Unit::Millis => format!("{h:02}:{m:02}:{s:02}.{:06}", fraction * 1000),
    })
}

/// Time since the epoch, no zone, to `YYYY-MM-DDTHH:MM:SS.ffffff`.
pub fn timestamp(value: i64, unit: Unit) -> Result<String, LogicalError> {
    let dt = match unit {
        Unit::Millis => DateTime::<Utc>::from_timestamp_millis(value),
        Unit::Micros => DateTime::<Utc>::from_timestamp_micros(value),
        Unit::Nanos => Some(DateTime::<Utc>::from_timestamp_nanos(value)),
    }
    .ok_or(LogicalError::Timestamp(value))?;
    let fmt = if unit == Unit::Nanos {
        "%Y-%m-%dT%H:%M:%S%.9f"
    } else {
        "%Y-%m-%dT%H:%M:%S%.6f"
    };
    Ok(dt.naive_utc().format(fmt).to_string())
}

/// Debezium's ZonedTimestamp (ISO-8601 with offset) to UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn zoned_timestamp(text: &str) -> Result<String, LogicalError> {
    let dt = DateTime::parse_from_rfc3339(text).map_err(|_| LogicalError::Zoned(text.into()))?;
    let utc = dt.with_timezone(&Utc);
    let fmt = if utc.timestamp_subsec_nanos() % 1000 != 0 {
        "%Y-%m-%dT%H:%M:%S%.9fZ"
    } else {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    };
    Ok(utc.format(fmt).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        // 12345 = 0x3039
        assert_eq!(decimal_from_bytes(&[0x30, 0x39], 2), "123.45");
        assert_eq!(decimal_from_bytes(&[0x30, 0x39], 0), "12345");
        assert_eq!(decimal_from_bytes(&[0x30, 0x39], 7), "0.0012345");
        assert_eq!(decimal_from_bytes(&[0x30, 0x39], -2), "1234500");
        // -12345 = 0xCFC7
        assert_eq!(decimal_from_bytes(&[0xCF, 0xC7], 2), "-123.45");
        assert_eq!(decimal_from_bytes(&[0xFF], 0), "-1");
        assert_eq!(decimal_from_bytes(&[0x80], 0), "-128");
        assert_eq!(decimal_from_bytes(&[], 3), "0.000");
        assert_eq!(decimal_from_bytes(&[0x00], 0), "0");
        assert!(decimal(&[1], i32::MAX).is_err());
        assert!(decimal(&[1], -20_000).is_err());
        assert!(decimal(&vec![1; MAX_DECIMAL_BYTES + 1], 0).is_err());
        assert_eq!(decimal(&[0x30, 0x39], 2).unwrap(), "123.45");
        // 2^64 needs more than a u64
        assert_eq!(
            decimal_from_bytes(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0], 0),
            "18446744073709551616"
        );
        // 10^40, beyond i128
        let big: Vec<u8> = {
            let mut n = vec![1u8];
            for _ in 0..40 {
                let mut carry = 0u32;
                for b in n.iter_mut().rev() {
                    let v = u32::from(*b) * 10 + carry;
                    *b = (v & 0xff) as u8;
                    carry = v >> 8;
                }
                while carry > 0 {
                    n.insert(0, (carry & 0xff) as u8);
                    carry >>= 8;
                }
            }
            n.insert(0, 0);
            n
        };
        assert_eq!(
            decimal_from_bytes(&big, 2),
            format!("1{}.00", "0".repeat(38))
        );
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(date_from_days(0).unwrap(), "1970-01-01");
        assert_eq!(date_from_days(19_723).unwrap(), "2024-01-01");
        assert_eq!(date_from_days(-1).unwrap(), "1969-12-31");
        assert!(date_from_days(i64::MAX).is_err());
    }

    #[test]
    fn dates_are_written_as_chrono_writes_them_in_every_year() {
        let first = NaiveDate::from_ymd_opt(-3, 1, 1).unwrap();
        let last = NaiveDate::from_ymd_opt(10_002, 12, 31).unwrap();
        let mut day = first;
        while day <= last {
            let days = i64::from(day.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE;
            let want = day.format("%Y-%m-%d").to_string();
            assert_eq!(date_from_days(days).unwrap(), want, "{day:?}");
            day = day
                + chrono::Days::new(
                    if day.year() % 1000 == 0 || day.year() > 9990 || day.year() < 2 {
                        1
                    } else {
                        97
                    },
                );
        }
        assert_eq!(time_of_day(0, Unit::Micros).unwrap(), "00:00:00.000000");
        assert_eq!(
            time_of_day(45_296_789_012, Unit::Micros).unwrap(),
            "12:34:56.789012"
        );
        assert_eq!(
            time_of_day(45_296_789, Unit::Millis).unwrap(),
            "12:34:56.789000"
        );
        assert_eq!(
            time_of_day(45_296_789_012_345, Unit::Nanos).unwrap(),
            "12:34:56.789012345"
        );
        assert_eq!(
            time_of_day(86_400_000_000, Unit::Micros).unwrap(),
            "24:00:00.000000"
        );
        assert!(time_of_day(-1, Unit::Micros).is_err());
        assert!(time_of_day(86_400_000_001, Unit::Micros).is_err());
        assert_eq!(
            timestamp(1_704_067_200_123_456, Unit::Micros).unwrap(),
            "2024-01-01T00:00:00.123456"
        );
        assert_eq!(
            timestamp(1_704_067_200_123, Unit::Millis).unwrap(),
            "2024-01-01T00:00:00.123000"
        );
        assert_eq!(
            timestamp(1_704_067_200_123_456_789, Unit::Nanos).unwrap(),
            "2024-01-01T00:00:00.123456789"
        );
        assert_eq!(
            timestamp(-1, Unit::Micros).unwrap(),
            "1969-12-31T23:59:59.999999"
        );
        assert!(timestamp(i64::MAX, Unit::Micros).is_err());
    }

    #[test]
    fn zoned() {
        assert_eq!(
            zoned_timestamp("2024-01-01T10:00:00Z").unwrap(),
            "2024-01-01T10:00:00.000000Z"
        );
        assert_eq!(
            zoned_timestamp("2024-01-01T10:00:00.5+02:00").unwrap(),
            "2024-01-01T08:00:00.500000Z"
        );
        assert_eq!(
            zoned_timestamp("2024-01-01T10:00:00.123456789Z").unwrap(),
            "2024-01-01T10:00:00.123456789Z"
        );
        assert!(zoned_timestamp("yesterday").is_err());
        assert!(zoned_timestamp("2024-01-01T10:00:00").is_err());
    }
}
