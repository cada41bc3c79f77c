//! A request's header fields as they come out of HPACK, checked as RFC
//! 9113 §8.2 and §8.3 ask, and made into a request.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};

/// The request's header list exceeded its limit.
pub struct TooLarge;

/// A request's fields as they are decoded, checked as RFC 9113 §8.3 asks.
#[derive(Default)]
pub struct Fields {
    method: Option<Method>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    headers: HeaderMap,
    size: usize,
    too_large: bool,
    malformed: bool,
    regular_seen: bool,
}

impl Fields {
    pub fn add(&mut self, name: &[u8], value: &[u8], limit: usize) {
        // Counted as SETTINGS_MAX_HEADER_LIST_SIZE counts (§6.5.2); past
        // the limit nothing more is kept (an HPACK bomb expands here).
        self.size += name.len() + value.len() + 32;
        if self.size > limit {
            self.too_large = true;
        }
        if self.too_large || self.malformed {
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.regular_seen {
                self.malformed = true;
                return;
            }
            let slot = match pseudo {
                b"method" => {
                    if self.method.is_some() {
                        self.malformed = true;
                    }
                    match Method::from_bytes(value) {
                        Ok(m) => self.method = Some(m),
                        Err(_) => self.malformed = true,
                    }
                    return;
                }
                b"scheme" => &mut self.scheme,
                b"authority" => &mut self.authority,
                b"path" => &mut self.path,
                _ => {
                    self.malformed = true;
                    return;
                }
            };
            if slot.replace(Bytes::copy_from_slice(value)).is_some() {
                self.malformed = true;
            }
            return;
        }
        self.regular_seen = true;
        // Upper case and connection-specific fields are malformed (§8.2).
        if name.iter().any(u8::is_ascii_uppercase)
            || matches!(
                name,
                b"connection"
                    | b"keep-alive"
                    | b"proxy-connection"
                    | b"transfer-encoding"
                    | b"upgrade"
            )
            || (name == b"te" && value != b"trailers")
        {
            self.malformed = true;
            return;
        }
        match (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            (Ok(n), Ok(v)) => {
                self.headers.append(n, v);
            }
            _ => self.malformed = true,
        }
    }

    /// The request, or `Ok(None)` when it is malformed.
    pub fn into_request(self) -> Result<Option<Request<()>>, TooLarge> {
        if self.too_large {
            return Err(TooLarge);
        }
        let Some(method) = self.method.filter(|_| !self.malformed) else {
            return Ok(None);
        };
        let mut uri = Uri::builder();
        if method == Method::CONNECT {
            match (&self.authority, &self.scheme, &self.path) {
                (Some(a), None, None) => uri = uri.authority(a.as_ref()),
                _ => return Ok(None),
            }
        } else {
            let (Some(scheme), Some(path)) = (&self.scheme, &self.path) else {
                return Ok(None);
            };
            if path.is_empty() {
                return Ok(None);
            }
            uri = uri.scheme(scheme.as_ref()).path_and_query(path.as_ref());
            match &self.authority {
                Some(a) => uri = uri.authority(a.as_ref()),
                // Without :authority the target is the path alone.
                None => uri = Uri::builder().path_and_query(path.as_ref()),
            }
        }
        let Ok(uri) = uri.build() else {
            return Ok(None);
        };
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = self.headers;
        Ok(Some(request))
    }
}

/// The declared Content-Length: one number, or several equal ones.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut found = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let n: u64 = v
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(())?;
        if found.is_some_and(|f| f != n) {
            return Err(());
        }
        found = Some(n);
    }
    Ok(found)
}
