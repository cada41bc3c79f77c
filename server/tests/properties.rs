//! Properties of the value parsers requests and responses go through:
//! HTTP-dates and delta-seconds (RFC 9110 §5.6.7, RFC 9111 §1.2.2) and the
//! conditional and range answers (RFC 9110 §13, §14).
//!
//! CI runs proptest's default number of cases; `loadtest/bench/properties.sh`
//! runs millions (`PROPTEST_CASES`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fanout_server::conditional::{answer, content_range, Answer};
use fanout_server::time_fields::{delta_seconds, http_date, DELTA_SECONDS_MAX};
use http::{header, HeaderMap, HeaderValue};
use proptest::prelude::*;

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const LONG_DAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The calendar fields of `secs` after the epoch (UTC): year, month (0-11),
/// day, weekday (0 = Thursday), hour, minute, second.
fn civil(secs: u64) -> (u64, usize, u64, usize, u64, u64, u64) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's days-from-civil, inverted.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u64;
    (
        year,
        month - 1,
        day,
        (days % 7) as usize,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap()
}

/// Flips the case of the letters `flips` selects.
fn recase(s: &str, flips: &[bool]) -> String {
    s.chars()
        .zip(flips.iter().cycle())
        .map(|(c, &flip)| {
            if flip {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

/// 1970 to 2069: the century RFC 850's two-digit years name unambiguously.
fn instants() -> impl Strategy<Value = u64> {
    0u64..3_155_760_000
}

proptest! {
    #[test]
    fn every_http_date_form_reads_as_the_instant_it_writes(
        secs in instants(),
        flips in proptest::collection::vec(any::<bool>(), 1..8),
    ) {
        let at = UNIX_EPOCH + Duration::from_secs(secs);
        let (year, month, day, weekday, h, m, s) = civil(secs);
        let imf = httpdate::fmt_http_date(at);
        let rfc850 = format!(
            "{}, {day:02}-{}-{:02} {h:02}:{m:02}:{s:02} GMT",
            LONG_DAYS[weekday], MONTHS[month], year % 100
        );
        let asctime = format!(
            "{} {} {day:>2} {h:02}:{m:02}:{s:02} {year}",
            DAYS[weekday], MONTHS[month]
        );
        for form in [&imf, &rfc850, &asctime] {
            prop_assert_eq!(http_date(&value(form)), Some(at), "{}", form);
            // Names in any case (digits are unaffected by the flips).
            let any_case = recase(form, &flips);
            prop_assert_eq!(http_date(&value(&any_case)), Some(at), "{}", any_case);
        }
    }

    #[test]
    fn a_string_is_a_date_only_as_httpdate_reads_it(s in "\\PC{0,40}") {
        let Ok(v) = HeaderValue::from_str(&s) else { return Ok(()) };
        let ours = http_date(&v);
        if let Ok(theirs) = httpdate::parse_http_date(s.trim()) {
            prop_assert_eq!(ours, Some(theirs));
        }
        // Whatever is read is a time a date could write.
        if let Some(t) = ours {
            prop_assert!(t >= UNIX_EPOCH);
        }
    }

    #[test]
    fn delta_seconds_saturate_and_refuse_anything_but_digits(n in any::<u64>(), junk in "[^0-9]{1,3}") {
        prop_assert_eq!(delta_seconds(&n.to_string()), Some(n.min(DELTA_SECONDS_MAX)));
        let digits = format!("{n}0000000000000000000000");
        prop_assert_eq!(delta_seconds(&digits), Some(DELTA_SECONDS_MAX));
        prop_assert_eq!(delta_seconds(&format!("{n}{junk}")), None);
        prop_assert_eq!(delta_seconds(&format!("{junk}{n}")), None);
    }

    #[test]
    fn a_byte_range_is_answered_within_the_representation(
        len in 1u64..1 << 40,
        first in 0u64..1 << 41,
        span in 0u64..1 << 40,
        suffix in 1u64..1 << 41,
    ) {
        let ask = |range: String| {
            let mut h = HeaderMap::new();
            h.insert(header::RANGE, value(&range));
            answer(&h, Some("\"e\""), None, Some(len))
        };
        let last = first.saturating_add(span);
        let got = ask(format!("bytes={first}-{last}"));
        if first < len {
            prop_assert_eq!(got, Answer::Partial(first, (last + 1).min(len)));
        } else {
            prop_assert_eq!(got, Answer::Unsatisfiable);
        }
        prop_assert_eq!(
            ask(format!("bytes={first}-")),
            if first < len { Answer::Partial(first, len) } else { Answer::Unsatisfiable }
        );
        prop_assert_eq!(
            ask(format!("bytes=-{suffix}")),
            Answer::Partial(len.saturating_sub(suffix), len)
        );
        // The Content-Range written for a part says exactly that part.
        if let Answer::Partial(a, b) = got {
            let cr = content_range(got, len).unwrap();
            prop_assert_eq!(cr.to_str().unwrap(), format!("bytes {a}-{}/{len}", b - 1));
        }
    }

    #[test]
    fn any_range_field_gets_an_answer_that_fits(len in 0u64..1 << 20, range in "\\PC{0,30}") {
        let Ok(v) = HeaderValue::from_str(&range) else { return Ok(()) };
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v);
        match answer(&h, None, Some(SystemTime::now()), Some(len)) {
            Answer::Partial(a, b) => prop_assert!(a < b && b <= len, "{a}..{b} of {len}"),
            Answer::Full | Answer::Unsatisfiable => {}
            Answer::NotModified => prop_assert!(false, "no validator was asked about"),
        }
    }
}
