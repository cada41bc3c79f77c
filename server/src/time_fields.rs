//! The two value syntaxes caching arithmetic rests on: HTTP-dates (RFC 9110
//! §5.6.7) and delta-seconds (RFC 9111 §1.2.2).
//!
//! Both are read the way the RFCs ask of a recipient: every date form a
//! sender may use is accepted, with the case of day, month and zone names
//! forgiven; a delta-seconds too large to hold counts as 2^31 rather than
//! as invalid, so a `max-age` of a hundred years stays a long lifetime.

use std::time::SystemTime;

use http::HeaderValue;

/// RFC 9111 §1.2.2: the value a cache uses for a delta-seconds it cannot
/// represent, and the most any is taken to mean.
pub const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// A delta-seconds value: one or more ASCII digits, nothing else. Too large
/// a value is [`DELTA_SECONDS_MAX`]; anything that is not digits (a sign, a
/// fraction, a space inside) is `None`.
pub fn delta_seconds(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        s.parse::<u64>()
            .map_or(DELTA_SECONDS_MAX, |n| n.min(DELTA_SECONDS_MAX)),
    )
}

/// An HTTP-date in any of its three forms (IMF-fixdate, RFC 850, asctime),
/// or `None` when the value is not one.
pub fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    let s = value.to_str().ok()?.trim();
    if let Ok(t) = httpdate::parse_http_date(s) {
        return Some(t);
    }
    // Senders that write "thu, 01 jan 2026 00:00:00 gmt" or a zone of
    // "UTC" mean the same instant; the names are the only thing fixed.
    let normalised: String = s
        .split(' ')
        .map(|word| {
            if word.eq_ignore_ascii_case("gmt") || word.eq_ignore_ascii_case("utc") {
                return "GMT".to_string();
            }
            let mut out = String::with_capacity(word.len());
            let mut after_letter = false;
            for c in word.chars() {
                out.push(if after_letter {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                });
                after_letter = c.is_ascii_alphabetic();
            }
            out
        })
        .collect::<Vec<_>>()
        .join(" ");
    httpdate::parse_http_date(&normalised).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn date(s: &str) -> Option<SystemTime> {
        http_date(&HeaderValue::from_str(s).unwrap())
    }

    #[test]
    fn every_form_of_http_date_names_the_same_instant() {
        // RFC 9110 §5.6.7's own example, in its three forms.
        let instant = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(instant));
        assert_eq!(date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(instant));
        assert_eq!(date("Sun Nov  6 08:49:37 1994"), Some(instant));
    }

    #[test]
    fn names_are_read_whatever_their_case() {
        let instant = date("Sun, 06 Nov 1994 08:49:37 GMT");
        assert!(instant.is_some());
        assert_eq!(date("sun, 06 nov 1994 08:49:37 gmt"), instant);
        assert_eq!(date("SUN, 06 NOV 1994 08:49:37 GMT"), instant);
        assert_eq!(date("Sun, 06 Nov 1994 08:49:37 UTC"), instant);
        assert_eq!(date("SUNDAY, 06-NOV-94 08:49:37 GMT"), instant);
        assert_eq!(date("sun nov  6 08:49:37 1994"), instant);
    }

    #[test]
    fn what_is_not_a_date_is_none() {
        for bad in ["0", "-1", "", "tomorrow", "Sun, 32 Nov 1994 08:49:37 GMT"] {
            assert_eq!(date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn delta_seconds_are_digits_and_saturate_at_two_to_the_31() {
        assert_eq!(delta_seconds("0"), Some(0));
        assert_eq!(delta_seconds("60"), Some(60));
        assert_eq!(
            delta_seconds("99999999999999999999999"),
            Some(DELTA_SECONDS_MAX)
        );
        assert_eq!(delta_seconds("4294967296"), Some(DELTA_SECONDS_MAX));
        for bad in ["", "-1", "+5", "1.5", "1 0", "ten"] {
            assert_eq!(delta_seconds(bad), None, "{bad:?}");
        }
    }
}
