//! What an origin says a client will want next, on a response: `Link`
//! fields with `rel=preload` (RFC 8288, as a packager names a playlist's
//! next segment), and `CDN-Origin-Assist-Prefetch-Path` (the CDN/origin
//! assist convention: a comma-separated list of paths). A cache that
//! prefetches reads the URIs from them; everything else in them is left
//! to the client.

use http::HeaderMap;

pub const ASSIST_PREFETCH_PATH: &str = "cdn-origin-assist-prefetch-path";

/// The URI references `headers` name for prefetching, in order, as
/// written (relative ones are relative to the response's URL).
pub fn targets(headers: &HeaderMap) -> Vec<String> {
    let mut out = Vec::new();
    for value in headers.get_all(http::header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for link in split_links(value) {
            if let Some(uri) = preload_uri(link) {
                out.push(uri.to_string());
            }
        }
    }
    for value in headers.get_all(ASSIST_PREFETCH_PATH) {
        let Ok(value) = value.to_str() else { continue };
        out.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        );
    }
    out
}

/// The link-values of a `Link` field: commas inside `<…>` and quoted
/// strings do not separate them.
fn split_links(value: &str) -> Vec<&str> {
    let (mut out, mut start, mut in_uri, mut in_quotes) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quotes => in_uri = true,
            '>' if !in_quotes => in_uri = false,
            '"' if !in_uri => in_quotes = !in_quotes,
            ',' if !in_uri && !in_quotes => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// The target of one link-value when its relation types include
/// `preload` (`rel=preload`, `rel="preload next"`).
fn preload_uri(link: &str) -> Option<&str> {
    let link = link.trim();
    let rest = link.strip_prefix('<')?;
    let end = rest.find('>')?;
    let (uri, params) = (&rest[..end], &rest[end + 1..]);
    let preload = params.split(';').any(|p| {
        let Some((name, value)) = p.split_once('=') else {
            return false;
        };
        name.trim().eq_ignore_ascii_case("rel")
            && value
                .trim()
                .trim_matches('"')
                .split_ascii_whitespace()
                .any(|r| r.eq_ignore_ascii_case("preload"))
    });
    (preload && !uri.is_empty()).then_some(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn preload_links_and_assist_paths_are_read_in_order() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::LINK,
            HeaderValue::from_static(
                "<seg,7.ts>; rel=preload; as=video, </style.css>; rel=stylesheet, <../8.ts>; rel=\"next preload\"",
            ),
        );
        h.append(
            http::header::LINK,
            HeaderValue::from_static("<9.ts>;rel=PRELOAD"),
        );
        h.insert(
            ASSIST_PREFETCH_PATH,
            HeaderValue::from_static("/a/10.ts, /a/11.ts"),
        );
        assert_eq!(
            targets(&h),
            ["seg,7.ts", "../8.ts", "9.ts", "/a/10.ts", "/a/11.ts"]
        );
    }

    #[test]
    fn links_that_do_not_parse_name_nothing() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::LINK,
            HeaderValue::from_static(
                "seg.ts; rel=preload, <>; rel=preload, <x.ts; rel=preload, <y.ts>; rel",
            ),
        );
        assert!(targets(&h).is_empty(), "{:?}", targets(&h));
    }
}
