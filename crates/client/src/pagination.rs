//! Lists that fetch their pages as they are read.

use crate::client::{ApiRequest, Client};
use crate::error::Result;
use futures_util::stream::{self, BoxStream, Stream};
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The items of a list endpoint, page after page, each page fetched when the
/// previous one has been read.
///
/// It ends after an empty page or the last page that `result_info` announces. An
/// error ends it too, after being yielded. Read it with
/// [`futures_util::StreamExt`] (`next`, `try_collect` via `TryStreamExt`, ...).
///
/// ```no_run
/// # async fn run() -> Result<(), zonecert_client::Error> {
/// use futures_util::StreamExt;
/// use zonecert_client::Client;
///
/// let client = Client::from_env()?;
/// let mut packs = client.ssl().certificate_packs().list("023e105f4ecef8ad9ca31a8372d0c353");
/// while let Some(pack) = packs.next().await {
///     let pack = pack?;
///     println!("{} {}", pack.id, pack.status);
/// }
/// # Ok(()) }
/// ```
pub struct ListStream<T> {
    inner: BoxStream<'static, Result<T>>,
}

impl<T> fmt::Debug for ListStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ListStream")
    }
}

impl<T> Stream for ListStream<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

struct PagerState<T> {
    client: Client,
    request: ApiRequest,
    next_page: Option<u64>,
    buffer: VecDeque<T>,
}

impl<T: DeserializeOwned + Send + 'static> ListStream<T> {
    /// Pages through `request`, starting at `first_page`.
    pub(crate) fn new(client: Client, request: ApiRequest, first_page: u64) -> Self {
        let state = PagerState {
            client,
            request,
            next_page: Some(first_page.max(1)),
            buffer: VecDeque::new(),
        };
        let inner = stream::unfold(state, |mut st| async move {
            loop {
                if let Some(item) = st.buffer.pop_front() {
                    return Some((Ok(item), st));
                }
                let page = st.next_page?;
                st.request.set_query("page", page.to_string());
                match st.client.request::<Vec<T>>(&st.request).await {
                    Err(e) => {
                        st.next_page = None;
                        return Some((Err(e), st));
                    }
                    Ok(envelope) => {
                        let items = envelope.result.unwrap_or_default();
                        let past_last = envelope
                            .result_info
                            .is_some_and(|info| info.total_pages > 0 && page >= info.total_pages);
                        st.next_page = if items.is_empty() || past_last {
                            None
                        } else {
                            page.checked_add(1)
                        };
                        st.buffer.extend(items);
                    }
                }
            }
        });
        ListStream {
            inner: Box::pin(inner),
        }
    }
}
