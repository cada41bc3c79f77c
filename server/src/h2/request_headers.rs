//! HPACK decoding of request headers (RFC 7541): the static and dynamic
//! tables, integers, raw and Huffman-coded strings.
//!
//! Its own rather than a crate's: the one maintained HPACK crate found
//! (loona-hpack 0.4) rebuilds a hash map of the whole Huffman code for every
//! Huffman-coded string; under h2load that was three quarters of the
//! connection's CPU. Huffman strings are decoded by [`super::huffman`].

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("an index outside the tables")]
    BadIndex,
    #[error("an integer that does not fit")]
    Integer,
    #[error("a block that ends mid-field")]
    Truncated,
    #[error("invalid Huffman code")]
    Huffman,
    #[error("a table size update that is not allowed here")]
    SizeUpdate,
}

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// A decoder's state: the dynamic table the peer's encoder fills.
pub struct Decoder {
    table: VecDeque<(Bytes, Bytes)>,
    size: usize,
    max_size: usize,
    /// The most the peer may set the table to: our SETTINGS_HEADER_TABLE_SIZE.
    allowed: usize,
}

impl Decoder {
    pub fn new(allowed: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: allowed,
            allowed,
        }
    }

    /// Decodes one complete header block, calling `field` with each name
    /// and value in order.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), DecodeError> {
        let mut at = 0;
        let mut fields_seen = false;
        while at < block.len() {
            let first = block[at];
            if first & 0x80 != 0 {
                let (index, n) = integer(&block[at..], 7)?;
                at += n;
                let (name, value) = self.entry(index)?;
                field(&name, &value);
            } else if first & 0x40 != 0 {
                let (name, value, n) = self.literal(&block[at..], 6)?;
                at += n;
                field(&name, &value);
                self.insert(name, value);
            } else if first & 0x20 != 0 {
                // §4.2: only at the start of a block, and within our limit.
                if fields_seen {
                    return Err(DecodeError::SizeUpdate);
                }
                let (size, n) = integer(&block[at..], 5)?;
                at += n;
                if size > self.allowed {
                    return Err(DecodeError::SizeUpdate);
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                // Without indexing (0000) or never indexed (0001): the same
                // to a server that forwards no HPACK.
                let (name, value, n) = self.literal(&block[at..], 4)?;
                at += n;
                field(&name, &value);
            }
            fields_seen = true;
        }
        Ok(())
    }

    fn entry(&self, index: usize) -> Result<(Bytes, Bytes), DecodeError> {
        match index {
            0 => Err(DecodeError::BadIndex),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((
                    Bytes::from_static(n.as_bytes()),
                    Bytes::from_static(v.as_bytes()),
                ))
            }
            _ => self
                .table
                .get(index - 62)
                .cloned()
                .ok_or(DecodeError::BadIndex),
        }
    }

    fn literal(&self, buf: &[u8], prefix: u8) -> Result<(Bytes, Bytes, usize), DecodeError> {
        let (index, mut at) = integer(buf, prefix)?;
        let name = if index == 0 {
            let (name, n) = string(&buf[at..])?;
            at += n;
            name
        } else {
            self.entry(index)?.0
        };
        let (value, n) = string(&buf[at..])?;
        Ok((name, value, at + n))
    }

    fn insert(&mut self, name: Bytes, value: Bytes) {
        let size = name.len() + value.len() + 32;
        // §4.4: an entry larger than the table empties it and is not kept.
        self.evict(size);
        if size <= self.max_size {
            self.size += size;
            self.table.push_front((name, value));
        }
    }

    /// Evicts until `room` more octets fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((n, v)) = self.table.pop_back() else {
                self.size = 0;
                return;
            };
            self.size -= n.len() + v.len() + 32;
        }
    }
}

/// An integer with a `prefix`-bit prefix (§5.1), and the octets it took.
fn integer(buf: &[u8], prefix: u8) -> Result<(usize, usize), DecodeError> {
    let max = (1usize << prefix) - 1;
    let first = *buf.first().ok_or(DecodeError::Truncated)? as usize & max;
    if first < max {
        return Ok((first, 1));
    }
    let mut value = max;
    let mut shift = 0;
    for (i, &b) in buf[1..].iter().enumerate() {
        // Four continuation octets reach 2^28: more than any field needs.
        if i >= 4 {
            return Err(DecodeError::Integer);
        }
        value += ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok((value, i + 2));
        }
    }
    Err(DecodeError::Truncated)
}

/// A string literal (§5.2), and the octets it took.
fn string(buf: &[u8]) -> Result<(Bytes, usize), DecodeError> {
    let huffman = buf.first().ok_or(DecodeError::Truncated)? & 0x80 != 0;
    let (len, n) = integer(buf, 7)?;
    let raw = buf.get(n..n + len).ok_or(DecodeError::Truncated)?;
    let value = if huffman {
        Bytes::from(super::huffman::decode(raw)?)
    } else {
        Bytes::copy_from_slice(raw)
    };
    Ok((value, n + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decode(d: &mut Decoder, block: &str) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        d.decode(&hex(block), |n, v| {
            fields.push((
                String::from_utf8(n.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ))
        })
        .unwrap();
        fields
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rfc_7541_c_4_requests_with_huffman_coding() {
        let mut d = Decoder::new(4096);
        let base = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        assert_eq!(
            decode(&mut d, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
            pairs(&base)
        );
        let mut second = base.to_vec();
        second.push(("cache-control", "no-cache"));
        assert_eq!(
            decode(&mut d, "8286 84be 5886 a8eb 1064 9cbf"),
            pairs(&second)
        );
        assert_eq!(
            decode(
                &mut d,
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"
            ),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(d.size, 164, "the table as §C.4.3 leaves it");
    }

    #[test]
    fn bad_codes_indices_and_updates_are_errors_not_panics() {
        let mut d = Decoder::new(4096);
        assert_eq!(d.decode(&[0x80], |_, _| {}), Err(DecodeError::BadIndex));
        assert_eq!(d.decode(&[0xbe], |_, _| {}), Err(DecodeError::BadIndex));
        assert_eq!(
            d.decode(&[0x41, 0x05, b'a'], |_, _| {}),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            d.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], |_, _| {}),
            Err(DecodeError::Integer)
        );
        // A table size update above our setting, or after a field.
        assert_eq!(
            d.decode(&[0x3f, 0xe2, 0x1f], |_, _| {}),
            Err(DecodeError::SizeUpdate)
        );
        assert_eq!(
            d.decode(&[0x82, 0x20], |_, _| {}),
            Err(DecodeError::SizeUpdate)
        );
        // Arbitrary input never panics.
        let mut seed = 7u64;
        for _ in 0..20_000 {
            let len = (seed % 40) as usize;
            let block: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect();
            let _ = d.decode(&block, |_, _| {});
        }
    }

    #[test]
    fn eviction_keeps_the_table_within_its_size() {
        let mut d = Decoder::new(100);
        for i in 0..10 {
            let v = format!("value-{i:040}");
            d.insert(Bytes::from_static(b"x-a"), Bytes::from(v));
            assert!(d.size <= 100);
        }
        assert_eq!(d.table.len(), 1, "one 80-octet entry fits in 100");
        d.insert(Bytes::from_static(b"x-b"), Bytes::from(vec![b'z'; 200]));
        assert!(
            d.table.is_empty() && d.size == 0,
            "too large: empties the table"
        );
    }
}
