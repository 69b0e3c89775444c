use super::framing::*;
use super::*;

fn status(head: &[u8]) -> Option<u16> {
    match check_head(head) {
        Head::Refused(e) => Some(e.status().as_u16()),
        Head::Partial | Head::Complete { .. } => None,
    }
}

#[test]
fn heads_are_checked_as_hyper_would_with_our_limits() {
    assert!(matches!(
        check_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        Head::Complete {
            len: 27,
            body: Some(0)
        }
    ));
    assert!(matches!(
        check_head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
        Head::Complete { body: Some(5), .. }
    ));
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        Some(400)
    );
    assert!(matches!(
        check_head(b"GET / HTTP/1.1\r\nHost: x\r\n"),
        Head::Partial
    ));
    assert_eq!(status(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), Some(400));
    assert_eq!(status(b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n"), Some(400));
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100_000));
    assert_eq!(status(long.as_bytes()), Some(414));
    // A long request line is refused before it ends.
    assert_eq!(status(&long.as_bytes()[..20_000]), Some(414));
    let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
        Some(431)
    );
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "v".repeat(MAX_HEAD_BYTES));
    assert_eq!(status(big.as_bytes()), Some(431));
}

/// Follows `parts` (received one after another) as one chunked body: the bytes
/// taken at each part, and where the body ended (its length) if it did.
fn follow(parts: &[&[u8]]) -> Result<(Vec<usize>, Option<usize>), ()> {
    let mut state = Chunked::Size;
    let mut pending = Vec::new();
    let (mut taken, mut total) = (Vec::new(), 0);
    for part in parts {
        pending.extend_from_slice(part);
        let (take, ended) = state.advance(&pending)?;
        pending.drain(..take);
        taken.push(take);
        total += take;
        if ended {
            return Ok((taken, Some(total)));
        }
    }
    Ok((taken, None))
}

#[test]
fn chunked_bodies_are_followed_to_their_end() {
    let whole = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: v\r\n\r\nGET / HTTP/1.1\r\n";
    let end = whole.len() - b"GET / HTTP/1.1\r\n".len();
    assert_eq!(follow(&[&whole[..]]), Ok((vec![end], Some(end))));
    // One byte at a time: a size line or a trailer line is taken only whole.
    let bytes: Vec<&[u8]> = whole.chunks(1).collect();
    let (taken, ended) = follow(&bytes).unwrap();
    assert_eq!(ended, Some(end));
    assert_eq!(taken[0], 0, "a size line's first byte waits for its end");
    assert_eq!(taken[2], 3, "`5\\r\\n` whole");
    // No trailers.
    assert_eq!(follow(&[&b"0\r\n\r\nnext"[..]]), Ok((vec![5], Some(5))));
    // Not yet ended.
    assert_eq!(follow(&[&b"a\r\n0123"[..]]), Ok((vec![7], None)));
    // Broken framing: no CRLF after the data, a size that is not hex, a size line
    // without an end.
    assert_eq!(follow(&[&b"1\r\nab\r\n"[..]]), Err(()));
    assert_eq!(follow(&[&b"zz\r\n"[..]]), Err(()));
    assert_eq!(follow(&[&[b'1'; MAX_CHUNK_LINE + 1][..]]), Err(()));
}

#[test]
fn plain_targets_are_ones_hyper_accepts() {
    // Every byte the fast path lets through, in the path and in the query, parses as
    // a URI with the `http` crate hyper uses: the table never accepts what hyper would
    // refuse (a refusal with an empty body instead of the envelope).
    for b in 0..=255u8 {
        if !PLAIN_TARGET_BYTES[usize::from(b)] {
            continue;
        }
        let c = char::from(b);
        for target in [
            format!("/{c}"),
            format!("/a{c}b?q={c}"),
            format!("/?{c}{c}"),
        ] {
            assert!(plainly_valid_target(&target), "{target:?}");
            assert!(
                target.parse::<axum::http::Uri>().is_ok(),
                "{target:?} is plain but not a URI to the http crate"
            );
        }
    }
    // What it leaves to the parser: not a path, a fragment, a space, a byte above
    // ASCII, a quote (valid in a path, not in a query).
    for target in ["*", "http://h/", "/a#b", "/a b", "/caf\u{e9}", "/a\"b"] {
        assert!(!plainly_valid_target(target), "{target:?}");
    }
    assert!(plainly_valid_target(
        "/client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353/ssl/verification?retry=true"
    ));
    // And a head with a target the table refuses is still checked by parsing.
    assert_eq!(
        status(b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n"),
        Some(400)
    );
}

/// `plain_head` vouches only for heads the full check (httparse) accepts, with the same
/// length and body: checked over heads clients send and every one-byte change, cut and
/// `Content-Length` variant of them.
#[test]
fn plain_heads_are_ones_the_parser_accepts_alike() {
    let token = "a".repeat(40);
    let sent = [
        format!(
            "GET /client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353/ssl/verification HTTP/1.1\r\n\
             Host: 127.0.0.1:8080\r\nAccept-Encoding: identity\r\nAuthorization: Bearer {token}\r\n\r\n"
        ),
        "GET /?retry=true HTTP/1.0\r\nuser-agent: curl/8.5.0\r\naccept: */*\r\n\r\n".to_string(),
        "POST /client/v4/zones HTTP/1.1\r\ncontent-type: application/json\r\n\
         content-length: 12\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n{\"name\":\"a\"}"
            .to_string(),
        "PATCH /a HTTP/1.1\r\nContent-Length: 3\r\ncontent-length:  3 \r\n\r\nabc".to_string(),
        "GET / HTTP/1.1\r\n\r\n".to_string(),
    ];
    for head in &sent {
        let plain = plain_head(head.as_bytes());
        assert!(plain.is_some(), "{head:?} is what clients send");
    }
    let mut heads: Vec<Vec<u8>> = Vec::new();
    let lengths = [
        "0",
        "5",
        " 5 ",
        "\t5",
        "05",
        "",
        "5,5",
        "-1",
        "+5",
        "5 5",
        "0x5",
        "\u{660}",
        "18446744073709551615",
        "18446744073709551616",
        "9999999999999999999",
        "99999999999999999999",
    ];
    for length in lengths {
        for extra in [
            format!("Content-Length: {length}\r\n"),
            format!("Content-Length: 5\r\ncontent-length: {length}\r\n"),
            format!("Transfer-Encoding: chunked\r\nContent-Length: {length}\r\n"),
            format!("Content-Length: {length}\r\nTransfer-Encoding: chunked\r\n"),
        ] {
            heads.push(format!("POST /a HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes());
        }
    }
    let odd = [
        0u8, b'\t', b' ', b'\r', b'\n', b':', b'/', b'?', b'#', b'%', b'"', b'{', 0x7f, 0x80, 0xff,
        b'a', b'H',
    ];
    for head in &sent {
        let bytes = head.as_bytes();
        for at in 0..bytes.len() {
            heads.push(bytes[..at].to_vec());
            for &b in &odd {
                let mut changed = bytes.to_vec();
                changed[at] = b;
                heads.push(changed);
                let mut inserted = bytes.to_vec();
                inserted.insert(at, b);
                heads.push(inserted);
            }
        }
    }
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect();
    heads.push(format!("GET / HTTP/1.1\r\n{many}\r\n").into_bytes());
    heads.push(format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI_BYTES)).into_bytes());
    heads.push(
        format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "v".repeat(MAX_HEAD_BYTES)
        )
        .into_bytes(),
    );
    let mut vouched = 0;
    for head in &heads {
        let Some(plain) = plain_head(head) else {
            continue;
        };
        vouched += 1;
        match parsed_head(head) {
            Head::Complete { len, body } => assert_eq!(
                (len, body),
                (plain.len, Some(plain.body)),
                "{:?}",
                String::from_utf8_lossy(head)
            ),
            other => panic!(
                "{:?}: plain {plain:?}, parsed {other:?}",
                String::from_utf8_lossy(head)
            ),
        }
    }
    // The changes that keep a head valid (a letter for a letter, a trailing body's
    // byte) are vouched for too, not only the heads as sent.
    assert!(vouched > heads.len() / 4, "{vouched} of {}", heads.len());
}

#[test]
fn caps_follow_the_descriptor_limit() {
    assert_eq!(default_max_connections(Some(256)), 192);
    assert_eq!(default_max_connections(Some(1 << 20)), 4096);
    assert_eq!(default_max_connections(Some(10)), 1);
    assert_eq!(default_max_per_client(192), 48);
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let v6b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
    assert_eq!(client_key(v6), client_key(v6b), "one /64, one client");
}
