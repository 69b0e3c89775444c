//! The socket under hyper: every byte it reads passes here, heads checked, bodies
//! followed, timeouts and refusals applied.

use super::framing::{BodyLeft, Chunked, Head, check_head, plain_head};
use super::*;
use std::mem::MaybeUninit;

/// How long a refused connection's socket is kept after the refusal went out, reading
/// and dropping what the client still sends: closing a socket with unread bytes resets
/// the connection, and the client may lose the refusal with it.
pub(super) const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Most bytes read and dropped after a refusal.
pub(super) const REFUSAL_DRAIN_BYTES: usize = 1024 * 1024;

/// Bytes asked of the socket per read. The buffer is left uninitialised
/// (`ReadBuf::uninit`): zeroing 8 KiB before every read was a fifth of the
/// instructions of a cached GET verification (16,000 of 72,000, callgrind).
const READ_CHUNK: usize = 8192;

/// A refusal on its way out: sent, the sending side shut, the rest of the request
/// drained for a while.
pub(super) struct Refusal {
    bytes: Vec<u8>,
    sent: usize,
    shut: bool,
    drained: usize,
    linger: Pin<Box<Sleep>>,
    done: bool,
}

/// The socket as hyper sees it: heads checked while idle, bodies followed to their end,
/// the idle, header-read and send timeouts enforced, a refused head answered in the
/// envelope.
pub(super) struct Guarded {
    inner: TcpStream,
    shared: Arc<Shared>,
    limits: Limits,
    /// Bytes received and not handed to hyper yet: a head being received, or the part
    /// of a body whose framing is not known yet, and whatever followed them.
    head: BytesMut,
    /// Checked bytes hyper has not taken yet.
    ready: BytesMut,
    /// What is left of the body of the request handed over last.
    body: BodyLeft,
    /// The client closed its sending side.
    eof: bool,
    /// Whether this read waits at an idle point (so `head` collects a new request).
    idle: bool,
    /// The idle or header-read timer: made once per connection and reset for every
    /// request, not made and dropped twice per request (a boxed `Sleep` registered with
    /// the runtime's timer and deregistered: 950 instructions of a GET verification,
    /// callgrind). It may still run, and wake the connection for nothing, while not
    /// `read_armed`.
    read_timer: Option<Pin<Box<Sleep>>>,
    /// Whether `read_timer` is the deadline of the current wait (only while idle).
    read_armed: bool,
    /// Whether the armed deadline is the header-read one: a head began.
    head_timed: bool,
    /// When a send stalled (the client does not take the response).
    write_deadline: Option<Pin<Box<Sleep>>>,
    /// hyper's last send did not go out whole yet: a refusal waits behind it.
    write_blocked: bool,
    /// The refusal of a head, sent in place of hyper's answer.
    refusal: Option<Refusal>,
}

impl Guarded {
    pub(super) fn new(inner: TcpStream, shared: Arc<Shared>, limits: Limits) -> Self {
        Guarded {
            inner,
            shared,
            limits,
            head: BytesMut::new(),
            ready: BytesMut::new(),
            body: BodyLeft::None,
            eof: false,
            idle: false,
            read_timer: None,
            read_armed: false,
            head_timed: false,
            write_deadline: None,
            write_blocked: false,
            refusal: None,
        }
    }

    /// Whether a request is in flight: a head that follows it waits for its answer.
    fn in_flight(&self) -> bool {
        self.shared.in_flight.load(Ordering::Acquire) > 0
    }

    fn timed_out(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
    }

    /// Reads while idle: collects a head, checks it, hands it over whole with its body
    /// (when its length is known); what follows stays here, to be checked as the next
    /// head once this request is answered.
    fn poll_read_head(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.idle {
            self.idle = true;
            // A pipelined head already waiting has the header-read time, as any head
            // from its first byte.
            self.head_timed = !self.head.is_empty();
            let wait = if self.head_timed {
                self.limits.header_read
            } else {
                self.limits.idle
            };
            self.arm_read(wait);
        }
        loop {
            if !self.head.is_empty() {
                match check_head(&self.head) {
                    Head::Partial => {
                        // A head began and is not whole yet: from now on it has the
                        // header-read time. (Not armed for a head that came whole in
                        // the read that began it, the usual case.)
                        if !self.head_timed {
                            self.head_timed = true;
                            self.arm_read(self.limits.header_read);
                        }
                    }
                    Head::Complete { len, body } => {
                        self.idle = false;
                        self.read_armed = false;
                        self.ready = self.head.split_to(len);
                        self.body = match body {
                            Some(0) => BodyLeft::None,
                            Some(n) => BodyLeft::Length(n),
                            None => BodyLeft::Chunked(Chunked::Size),
                        };
                        // As much of the body as came with the head goes with it.
                        self.frame_body();
                        self.hand_over(buf);
                        return Poll::Ready(Ok(()));
                    }
                    Head::Refused(error) => {
                        tracing::info!(status = error.status().as_u16(), "request head refused");
                        self.idle = false;
                        self.read_armed = false;
                        self.head.clear();
                        self.refusal = Some(Refusal {
                            bytes: error.http1_bytes(),
                            sent: 0,
                            shut: false,
                            drained: 0,
                            linger: Box::pin(tokio::time::sleep(REFUSAL_LINGER)),
                            done: false,
                        });
                        return self.poll_refusal(cx);
                    }
                }
            }
            if self.head.is_empty() && buf.remaining() >= READ_CHUNK / 2 {
                match self.read_head_in_place(cx, buf) {
                    Some(read) => return read,
                    // Taken back into `head`, checked above.
                    None => continue,
                }
            }
            let mut chunk = [const { MaybeUninit::<u8>::uninit() }; READ_CHUNK];
            let mut chunk_buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.inner).poll_read(cx, &mut chunk_buf) {
                Poll::Pending => return self.read_pending(cx),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let got = chunk_buf.filled();
            if got.is_empty() {
                // The client closed: hyper sees the end of the stream (after what came
                // of a head, which it reports as incomplete).
                self.idle = false;
                self.read_armed = false;
                self.eof = true;
                self.ready = std::mem::take(&mut self.head);
                self.hand_over(buf);
                return Poll::Ready(Ok(()));
            }
            self.head.extend_from_slice(got);
        }
    }

    /// A read of the socket that waits: `Pending`, or the idle or header-read timeout.
    fn read_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.read_armed
            && let Some(deadline) = self.read_timer.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            let what = if self.head.is_empty() {
                "the idle connection"
            } else {
                "reading the request head"
            };
            return Poll::Ready(Err(Self::timed_out(what)));
        }
        Poll::Pending
    }

    /// Reads a new head (none of it received yet) straight into hyper's buffer, and
    /// leaves it there when it came whole, is one [`plain_head`] vouches for, and only
    /// its body (or part of it) follows: the usual request. Otherwise the bytes are
    /// taken back into `head` (`None`), to be checked and framed as any. Reading into
    /// a buffer of this layer first, then keeping and splitting it, then copying to
    /// hyper, was about 600 instructions of a GET verification (callgrind).
    fn read_head_in_place(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Option<Poll<io::Result<()>>> {
        let start = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => return Some(self.read_pending(cx)),
            Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
            Poll::Ready(Ok(())) => {}
        }
        let got = &buf.filled()[start..];
        if got.is_empty() {
            // The client closed with no head begun: hyper sees the end of the stream.
            self.idle = false;
            self.read_armed = false;
            self.eof = true;
            return Some(Poll::Ready(Ok(())));
        }
        if let Some(head) = plain_head(got)
            && let Some(body_left) = head.body.checked_sub(got.len() - head.len)
        {
            self.idle = false;
            self.read_armed = false;
            self.body = match body_left {
                0 => BodyLeft::None,
                n => BodyLeft::Length(n),
            };
            return Some(Poll::Ready(Ok(())));
        }
        self.head.extend_from_slice(got);
        buf.set_filled(start);
        None
    }

    /// Makes the read timer's deadline `wait` from now.
    fn arm_read(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        match self.read_timer.as_mut() {
            // Moving a registered deadline later is an atomic store in tokio's timer;
            // only an earlier one (the header-read time after the idle time) goes back
            // to the timer wheel.
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.read_timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.read_armed = true;
    }

    /// Sends the refusal, shuts the sending side, drains the rest of the request for a
    /// while; then hyper sees the end of the stream with nothing read, and closes without
    /// an answer of its own.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(refusal) = self.refusal.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while !refusal.done {
            if refusal.linger.as_mut().poll(cx).is_ready() {
                refusal.done = true;
                break;
            }
            if refusal.sent < refusal.bytes.len() {
                if self.write_blocked {
                    // hyper's last answer is still going out: the refusal follows it.
                    return Poll::Pending;
                }
                match ready!(
                    Pin::new(&mut self.inner).poll_write(cx, &refusal.bytes[refusal.sent..])
                ) {
                    Ok(0) | Err(_) => refusal.done = true,
                    Ok(n) => refusal.sent += n,
                }
                continue;
            }
            if !refusal.shut {
                let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
                refusal.shut = true;
            }
            let mut scratch = [0u8; 8192];
            let mut scratch_buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut scratch_buf)) {
                Ok(()) if !scratch_buf.filled().is_empty() => {
                    refusal.drained += scratch_buf.filled().len();
                    refusal.done = refusal.drained > REFUSAL_DRAIN_BYTES;
                }
                _ => refusal.done = true,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads the rest of a body: hands hyper the bytes its framing says belong to it,
    /// keeps what follows it for the next head.
    fn poll_read_body(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            self.frame_body();
            if !self.ready.is_empty() {
                self.hand_over(buf);
                return Poll::Ready(Ok(()));
            }
            if matches!(self.body, BodyLeft::None) {
                // The body ended exactly where the bytes received did.
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [const { MaybeUninit::<u8>::uninit() }; READ_CHUNK];
            let mut chunk_buf = ReadBuf::uninit(&mut chunk);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut chunk_buf))?;
            let got = chunk_buf.filled();
            if got.is_empty() {
                self.eof = true;
                self.ready = std::mem::take(&mut self.head);
                self.hand_over(buf);
                return Poll::Ready(Ok(()));
            }
            self.head.extend_from_slice(got);
        }
    }

    /// Moves the bytes of the current body received so far from `head` to `ready`, up
    /// to its end; what follows its end stays in `head`.
    fn frame_body(&mut self) {
        let take = match &mut self.body {
            BodyLeft::None => 0,
            BodyLeft::Length(left) => {
                let take = (*left).min(self.head.len());
                *left -= take;
                if *left == 0 {
                    self.body = BodyLeft::None;
                }
                take
            }
            BodyLeft::Chunked(state) => match state.advance(&self.head) {
                Ok((take, ended)) => {
                    if ended {
                        self.body = BodyLeft::None;
                    }
                    take
                }
                Err(()) => {
                    // Framing hyper will refuse as well: let it see the bytes and answer
                    // (it closes the connection), and stop following this one.
                    self.body = BodyLeft::Broken;
                    self.head.len()
                }
            },
            BodyLeft::Broken => self.head.len(),
        };
        let taken = self.head.split_to(take);
        self.ready.unsplit(taken);
    }

    fn hand_over(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.ready.len().min(buf.remaining());
        buf.put_slice(&self.ready[..n]);
        self.ready.advance(n);
    }

    /// Polls a send with the send timeout: a client that takes nothing for that long is
    /// given up.
    fn poll_sending<T>(
        &mut self,
        cx: &mut Context<'_>,
        sent: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match sent {
            Poll::Ready(r) => {
                self.write_deadline = None;
                self.write_blocked = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.write_blocked = true;
                let limit = self.limits.body_read;
                let deadline = self
                    .write_deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Self::timed_out("sending the response")));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shared.reader_waiting.store(false, Ordering::SeqCst);
        if !this.ready.is_empty() {
            this.hand_over(buf);
            return Poll::Ready(Ok(()));
        }
        if this.refusal.is_some() {
            return this.poll_refusal(cx);
        }
        if this.eof {
            // What the client sent before it closed, then the end of the stream.
            this.ready = std::mem::take(&mut this.head);
            this.hand_over(buf);
            return Poll::Ready(Ok(()));
        }
        if !matches!(this.body, BodyLeft::None) {
            return this.poll_read_body(cx, buf);
        }
        if this.idle || !this.in_flight() {
            return this.poll_read_head(cx, buf);
        }
        // The next head waits for the request in flight to be answered (and a refusal
        // then follows that answer). hyper does not always poll again by itself: after
        // a read that returned Pending it waits for a wake-up, which the socket, not
        // polled here, never gives. Once hyper's own header-read timer was removed,
        // connections stalled here (seen under callgrind, a few thousand requests in).
        // So the answer's end wakes this read; checked again after registering, in
        // case it ended in between.
        this.shared.reader.register(cx.waker());
        this.shared.reader_waiting.store(true, Ordering::SeqCst);
        if !this.in_flight() {
            this.shared.reader_waiting.store(false, Ordering::SeqCst);
            return this.poll_read_head(cx, buf);
        }
        Poll::Pending
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let sent = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.poll_sending(cx, sent)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let sent = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.poll_sending(cx, sent)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        this.poll_sending(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
