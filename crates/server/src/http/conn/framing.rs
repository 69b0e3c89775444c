//! Where a request head and its body end: the head checked as hyper would parse it
//! (with this server's limits), the body followed by its length or chunked framing.

use super::*;

/// The verdict on the bytes of a request head received so far.
#[derive(Debug)]
pub(super) enum Head {
    /// Not whole yet, nothing wrong so far.
    Partial,
    /// Whole and acceptable: `len` bytes, followed by a body of `body` bytes (`None`: a
    /// chunked body, whose end its framing tells).
    Complete { len: usize, body: Option<usize> },
    /// Refused with this error.
    Refused(ApiError),
}

/// Checks a request head as hyper would parse it, with this server's limits.
pub(super) fn check_head(bytes: &[u8]) -> Head {
    match plain_head(bytes) {
        Some(head) => Head::Complete {
            len: head.len,
            body: Some(head.body),
        },
        None => parsed_head(bytes),
    }
}

/// A head [`plain_head`] vouches for: its length, and its body's (`Content-Length`, 0
/// without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PlainHead {
    pub(super) len: usize,
    pub(super) body: usize,
}

/// The verdict of [`parsed_head`] on the heads clients send, for less work: a request
/// line of a method, a plain target ([`plainly_valid_target`]) and `HTTP/1.1` or
/// `HTTP/1.0`, then header lines of a name, a colon and a value, each line ended by
/// CRLF; no `Transfer-Encoding`, and only `Content-Length`s of digits that agree. Such a
/// head within the limits is one httparse accepts, with this length and body, so it is
/// `Head::Complete` there as well (a test holds the two to each other). `None` for
/// anything else, which [`parsed_head`] judges: a head not whole yet, any byte
/// httparse would refuse or that this scan does not know (a bare LF, an empty line
/// before the request line), over a limit.
///
/// The head is parsed twice, here and by hyper; httparse here took 1,200 of a GET
/// verification's instructions and its verdict's checks around it 500 (callgrind).
pub(super) fn plain_head(bytes: &[u8]) -> Option<PlainHead> {
    let method = token_len(bytes);
    if method == 0 || bytes.get(method) != Some(&b' ') {
        return None;
    }
    let target = &bytes[method + 1..];
    let target_len = run_len(target, &PLAIN_TARGET_BYTES);
    if target.first() != Some(&b'/')
        || target_len > MAX_URI_BYTES
        || target.get(target_len) != Some(&b' ')
    {
        return None;
    }
    let mut at = method + 1 + target_len + 1;
    let version = bytes.get(at..at + 10)?;
    if version != b"HTTP/1.1\r\n" && version != b"HTTP/1.0\r\n" {
        return None;
    }
    at += 10;
    let mut headers = 0;
    let mut length: Option<usize> = None;
    loop {
        let line = &bytes[at..];
        if line.starts_with(b"\r\n") {
            at += 2;
            break;
        }
        let name_len = token_len(line);
        if name_len == 0 || line.get(name_len) != Some(&b':') {
            return None;
        }
        let value = &line[name_len + 1..];
        let value_len = value_len(value)?;
        if value.get(value_len + 1) != Some(&b'\n') {
            return None;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return None;
        }
        let name = &line[..name_len];
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(&value[..value_len])?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return None;
        }
        at += name_len + 1 + value_len + 2;
    }
    if at > MAX_HEAD_BYTES {
        return None;
    }
    Some(PlainHead {
        len: at,
        body: length.unwrap_or(0),
    })
}

/// httparse's token bytes (a method, a header name).
static TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(
            b as u8,
            b'A'..=b'Z'
                | b'a'..=b'z'
                | b'0'..=b'9'
                | b'!'
                | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        );
        b += 1;
    }
    table
};

/// How many token bytes `bytes` starts with.
fn token_len(bytes: &[u8]) -> usize {
    run_len(bytes, &TOKEN_BYTES)
}

/// How many bytes `bytes` starts with that `table` accepts: eight at a time, with one
/// branch for the eight (a target's 60 bytes were 60 branches), then one by one.
fn run_len(bytes: &[u8], table: &[bool; 256]) -> usize {
    let mut at = 0;
    while let Some(eight) = bytes.get(at..at + 8) {
        if !eight
            .iter()
            .fold(true, |all, &b| all & table[usize::from(b)])
        {
            break;
        }
        at += 8;
    }
    let rest = &bytes[at..];
    at + rest
        .iter()
        .position(|&b| !table[usize::from(b)])
        .unwrap_or(rest.len())
}

/// The length of a header value up to the CR that ends its line, if every byte before
/// it is one httparse accepts in a value (a tab, a space, a visible ASCII character,
/// or any byte above ASCII); `None` for any other byte, or no CR.
fn value_len(value: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut at = 0;
    // Eight bytes at a time while none of them is below a space or DEL (the values'
    // bytes are mostly visible ASCII: a token's 47 bytes cost 8 steps, not 47); a
    // word that holds one, or might, is looked at byte by byte below.
    while let Some(word) = value.get(at..at + 8) {
        let mut eight = [0; 8];
        eight.copy_from_slice(word);
        let x = u64::from_ne_bytes(eight);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let del = x ^ (ONES * 0x7f);
        let del = del.wrapping_sub(ONES) & !del & HIGH;
        if below_space | del != 0 {
            break;
        }
        at += 8;
    }
    for (i, &b) in value.iter().enumerate().skip(at) {
        match b {
            b'\r' => return Some(i),
            b'\t' | b' '..=0x7e | 0x80..=0xff => {}
            _ => return None,
        }
    }
    None
}

/// A `Content-Length` value [`body_length`] reads as `Some` (digits, with spaces or
/// tabs around them); `None` for anything else, left to it.
fn content_length(value: &[u8]) -> Option<usize> {
    let start = value.iter().position(|&b| b != b' ' && b != b'\t')?;
    let end = value.iter().rposition(|&b| b != b' ' && b != b'\t')? + 1;
    let digits = &value[start..end];
    // 19 digits always fit a `usize` of 64 bits; longer ones go to `body_length`.
    if digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

/// Checks a request head as hyper would parse it, with this server's limits: parsed by
/// httparse.
pub(super) fn parsed_head(bytes: &[u8]) -> Head {
    // Uninitialised: filling 100 empty headers before each parse cost more than a
    // tenth of this check.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(bytes, &mut headers) {
        Ok(httparse::Status::Complete(len)) => {
            if request.path.is_some_and(|p| p.len() > MAX_URI_BYTES) {
                Head::Refused(ApiError::uri_too_long(MAX_URI_BYTES))
            } else if len > MAX_HEAD_BYTES {
                Head::Refused(ApiError::headers_too_large(MAX_HEAD_BYTES, MAX_HEADERS))
            } else if let Some(e) = request
                .path
                .filter(|p| !plainly_valid_target(p))
                .and_then(|p| p.parse::<axum::http::Uri>().err())
            {
                Head::Refused(ApiError::malformed_request(format!(
                    "the request target: {e}"
                )))
            } else {
                match body_length(request.headers) {
                    Ok(body) => Head::Complete { len, body },
                    Err(e) => Head::Refused(e),
                }
            }
        }
        Ok(httparse::Status::Partial) => {
            let line_ended = bytes.contains(&b'\n');
            if !line_ended && bytes.len() > MAX_URI_BYTES + 32 {
                // The request line alone is longer than any accepted URI.
                Head::Refused(ApiError::uri_too_long(MAX_URI_BYTES))
            } else if request.path.is_some_and(|p| p.len() > MAX_URI_BYTES) {
                Head::Refused(ApiError::uri_too_long(MAX_URI_BYTES))
            } else if bytes.len() > MAX_HEAD_BYTES {
                Head::Refused(ApiError::headers_too_large(MAX_HEAD_BYTES, MAX_HEADERS))
            } else {
                Head::Partial
            }
        }
        Err(httparse::Error::TooManyHeaders) => {
            Head::Refused(ApiError::headers_too_large(MAX_HEAD_BYTES, MAX_HEADERS))
        }
        Err(e) => Head::Refused(ApiError::malformed_request(e.to_string())),
    }
}

/// Whether a request target is one the `http` crate (hyper's) certainly accepts: a path
/// (and query) of bytes valid in both a path and a query, which is what clients send.
/// Parsing it as a `Uri` copies it into an allocation first (1,100 instructions of a
/// GET verification, callgrind), only to check what this table does; any other target
/// is still parsed, so the verdict is hyper's either way (a test holds the table to the
/// `http` crate's).
pub(super) fn plainly_valid_target(target: &str) -> bool {
    target.starts_with('/') && target.bytes().all(|b| PLAIN_TARGET_BYTES[usize::from(b)])
}

/// The bytes of [`plainly_valid_target`]: valid in a path and in a query, per the
/// `http` crate (`?` starts the query; no `#`, no space or control, nothing above
/// ASCII).
pub(super) static PLAIN_TARGET_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(
            b as u8,
            0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x5F | 0x61..=0x7A | 0x7C | 0x7E
        );
        b += 1;
    }
    table
};

/// What is left of the body of the request hyper is reading.
#[derive(Debug)]
pub(super) enum BodyLeft {
    /// No body, or it was read whole: the next bytes start a head.
    None,
    /// This many bytes (`Content-Length`).
    Length(usize),
    /// A chunked body, where its framing stands.
    Chunked(Chunked),
    /// A chunked body whose framing is broken: every byte goes to hyper, which refuses
    /// it and closes the connection.
    Broken,
}

/// Where a chunked body's framing stands (RFC 9112, section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunked {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes left, then its CRLF.
    Data(u64),
    /// At the CRLF that ends a chunk's data: this many of its bytes left.
    DataEnd(u8),
    /// After the last chunk: at a trailer line or the empty line that ends the body.
    Trailers,
}

/// Longest chunk-size line or trailer line followed; a longer one is broken framing.
pub(super) const MAX_CHUNK_LINE: usize = 4096;

impl Chunked {
    /// Follows the framing over `bytes`, the body's bytes received and not yet handed
    /// over: how many of them belong to the body for sure (a line is taken only whole),
    /// and whether the body ends there. An error for framing that is not HTTP's.
    pub(super) fn advance(&mut self, bytes: &[u8]) -> Result<(usize, bool), ()> {
        let mut at = 0;
        loop {
            let rest = &bytes[at..];
            match *self {
                Chunked::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((line, 0))) => {
                        at += line;
                        *self = Chunked::Trailers;
                    }
                    Ok(httparse::Status::Complete((line, size))) => {
                        at += line;
                        *self = Chunked::Data(size);
                    }
                    Ok(httparse::Status::Partial) if rest.len() < MAX_CHUNK_LINE => {
                        return Ok((at, false));
                    }
                    Ok(httparse::Status::Partial) | Err(_) => return Err(()),
                },
                Chunked::Data(left) => {
                    if rest.is_empty() {
                        return Ok((at, false));
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    at += take;
                    let left = left.saturating_sub(u64::try_from(take).unwrap_or(u64::MAX));
                    *self = if left == 0 {
                        Chunked::DataEnd(2)
                    } else {
                        Chunked::Data(left)
                    };
                }
                Chunked::DataEnd(left) => {
                    let Some(&byte) = rest.first() else {
                        return Ok((at, false));
                    };
                    if byte != if left == 2 { b'\r' } else { b'\n' } {
                        return Err(());
                    }
                    at += 1;
                    *self = if left == 2 {
                        Chunked::DataEnd(1)
                    } else {
                        Chunked::Size
                    };
                }
                Chunked::Trailers => {
                    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                        return if rest.len() < MAX_CHUNK_LINE {
                            Ok((at, false))
                        } else {
                            Err(())
                        };
                    };
                    let line = &rest[..end];
                    at += end + 1;
                    if line.is_empty() || line == b"\r" {
                        return Ok((at, true));
                    }
                }
            }
        }
    }
}

/// The length of a request's body from its head: `Content-Length` (0 without one),
/// `None` when it is chunked. Content lengths that disagree or are not numbers are
/// refused, as hyper would.
pub(super) fn body_length(headers: &[httparse::Header<'_>]) -> Result<Option<usize>, ApiError> {
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Ok(None);
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| ApiError::malformed_request("an invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(ApiError::malformed_request(
                    "Content-Length headers that disagree",
                ));
            }
            length = Some(n);
        }
    }
    Ok(Some(length.unwrap_or(0)))
}
