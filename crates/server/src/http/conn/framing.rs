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
