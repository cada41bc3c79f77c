//! Targeted cache-control fields (RFC 9213), such as `CDN-Cache-Control`:
//! directives an origin addresses to CDN caches alone, in place of the
//! `Cache-Control` that browsers see.
//!
//! A targeted field is a Structured Fields Dictionary (RFC 8941 §3.2); one
//! that does not parse is ignored as a whole (RFC 9213 §2.1), and the next
//! field on the site's list, or `Cache-Control`, decides instead.

use http::HeaderMap;

/// The directives of the first field in `targeted` that is present, valid
/// and not empty, as (name, argument) pairs in `Cache-Control`'s terms: a
/// `?0` directive is left out, `?1` and bare keys have no argument.
pub fn directives(
    response: &HeaderMap,
    targeted: &[String],
) -> Option<Vec<(String, Option<String>)>> {
    targeted.iter().find_map(|name| {
        let mut value = String::new();
        for line in response.get_all(name.as_str()) {
            let line = line.to_str().ok()?;
            if !value.is_empty() {
                value.push_str(", ");
            }
            value.push_str(line);
        }
        let parsed = parse_dictionary(&value)?;
        (!parsed.is_empty()).then_some(parsed)
    })
}

/// A Structured Fields Dictionary whose members are bare items; `None` when
/// the value is not one. Parameters are checked and dropped (RFC 9213
/// defines none); inner lists make the field invalid here, since no cache
/// directive takes one.
fn parse_dictionary(s: &str) -> Option<Vec<(String, Option<String>)>> {
    let mut p = Parser {
        s: s.as_bytes(),
        at: 0,
    };
    let mut members: Vec<(String, Option<String>)> = Vec::new();
    p.skip_sp();
    if p.done() {
        return Some(members);
    }
    loop {
        let key = p.key()?;
        let value = if p.eat(b'=') {
            p.bare_item()?
        } else {
            Item::Bool(true)
        };
        p.parameters()?;
        let value = match value {
            Item::Bool(false) => None,
            Item::Bool(true) => Some(None),
            Item::Value(v) => Some(Some(v)),
        };
        // RFC 8941 §4.2.2: a repeated key overwrites the earlier one.
        members.retain(|(k, _)| *k != key);
        if let Some(v) = value {
            members.push((key, v));
        }
        p.skip_ows();
        if p.done() {
            return Some(members);
        }
        if !p.eat(b',') {
            return None;
        }
        p.skip_ows();
        if p.done() {
            return None; // trailing comma
        }
    }
}

enum Item {
    Bool(bool),
    Value(String),
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.at >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn key(&mut self) -> Option<String> {
        let start = self.at;
        match self.peek()? {
            b'a'..=b'z' | b'*' => self.at += 1,
            _ => return None,
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.at += 1;
        }
        Some(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    fn bare_item(&mut self) -> Option<Item> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number().map(Item::Value),
            b'"' => self.string().map(Item::Value),
            b'?' => {
                self.at += 1;
                let b = match self.peek()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return None,
                };
                self.at += 1;
                Some(Item::Bool(b))
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'*' => {
                let start = self.at;
                self.at += 1;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c))
                {
                    self.at += 1;
                }
                Some(Item::Value(
                    String::from_utf8_lossy(&self.s[start..self.at]).into_owned(),
                ))
            }
            b':' => {
                // A byte sequence: base64 between colons.
                self.at += 1;
                let start = self.at;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || b"+/=".contains(&c))
                {
                    self.at += 1;
                }
                let v = String::from_utf8_lossy(&self.s[start..self.at]).into_owned();
                self.eat(b':').then_some(Item::Value(v))
            }
            _ => None,
        }
    }

    /// An Integer (at most 15 digits) or a Decimal (at most 12 integer
    /// and 3 fractional digits), kept as written.
    fn number(&mut self) -> Option<String> {
        let start = self.at;
        self.eat(b'-');
        let int_start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let int_digits = self.at - int_start;
        if int_digits == 0 {
            return None;
        }
        if self.eat(b'.') {
            let frac_start = self.at;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.at += 1;
            }
            let frac = self.at - frac_start;
            if int_digits > 12 || frac == 0 || frac > 3 {
                return None;
            }
        } else if int_digits > 15 {
            return None;
        }
        Some(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    fn string(&mut self) -> Option<String> {
        self.at += 1; // the opening quote
        let mut out = String::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek()? {
                        c @ (b'"' | b'\\') => out.push(c as char),
                        _ => return None,
                    }
                }
                c @ 0x20..=0x7e => out.push(c as char),
                _ => return None,
            }
            self.at += 1;
        }
    }

    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip_sp();
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parsed(v: &str) -> Option<Vec<(String, Option<String>)>> {
        parse_dictionary(v)
    }

    fn pairs(list: &[(&str, Option<&str>)]) -> Option<Vec<(String, Option<String>)>> {
        Some(
            list.iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
        )
    }

    #[test]
    fn dictionaries_become_directives() {
        assert_eq!(parsed("max-age=60"), pairs(&[("max-age", Some("60"))]));
        assert_eq!(
            parsed("max-age=60, stale-if-error=600,  public"),
            pairs(&[
                ("max-age", Some("60")),
                ("stale-if-error", Some("600")),
                ("public", None)
            ])
        );
        assert_eq!(parsed("no-store=?1"), pairs(&[("no-store", None)]));
        assert_eq!(
            parsed("no-store=?0, max-age=5"),
            pairs(&[("max-age", Some("5"))])
        );
        assert_eq!(parsed("private;x=1"), pairs(&[("private", None)]));
        assert_eq!(
            parsed("max-age=5, max-age=9"),
            pairs(&[("max-age", Some("9"))]),
            "the last of a repeated key"
        );
        assert_eq!(
            parsed("note=\"a \\\"b\\\"\""),
            pairs(&[("note", Some("a \"b\""))])
        );
    }

    #[test]
    fn anything_else_is_invalid_as_a_whole() {
        for bad in [
            "Max-Age=60",
            "max-age=60,",
            "max-age=",
            "max-age=\"60",
            "max-age=1234567890123456",
            "max-age=60 public",
            "max-age=(1 2)",
            "9lives",
        ] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_first_valid_non_empty_field_on_the_list_wins() {
        let list = [
            "fanout-cache-control".to_string(),
            "cdn-cache-control".to_string(),
        ];
        let mut h = HeaderMap::new();
        h.insert("cdn-cache-control", HeaderValue::from_static("max-age=30"));
        assert_eq!(directives(&h, &list), pairs(&[("max-age", Some("30"))]));
        h.insert(
            "fanout-cache-control",
            HeaderValue::from_static("Max-Age=5"),
        );
        assert_eq!(
            directives(&h, &list),
            pairs(&[("max-age", Some("30"))]),
            "an invalid field is skipped"
        );
        h.insert(
            "fanout-cache-control",
            HeaderValue::from_static("max-age=5"),
        );
        assert_eq!(directives(&h, &list), pairs(&[("max-age", Some("5"))]));
        assert_eq!(directives(&h, &[]), None);
    }
}
