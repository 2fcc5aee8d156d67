//! The orchestrator's global event feed, `GET /events?after=<position>&limit=<n>` with an
//! operator's bearer token ([`contracts::history::FeedPage`]): for catch-up, rebuilds and the
//! store's head.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::event::{Event, EventError, Wire};

/// Why the feed could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the orchestrator's feed at {url} cannot be reached: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the orchestrator's feed answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the orchestrator's feed sent what is not a feed page: {0}")]
    Decode(String),
    #[error("the feed holds an event that cannot be applied: {0}")]
    Event(#[from] EventError),
}

impl FeedError {
    /// A bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            FeedError::Unreachable { .. } => "unreachable",
            FeedError::Status { .. } => "status",
            FeedError::Decode(_) | FeedError::Event(_) => "decode",
        }
    }
}

/// One page: its events in position order and the store's head.
#[derive(Debug, Clone)]
pub struct Page {
    pub events: Vec<Event>,
    pub head: i64,
}

/// A page as it travels: its events straight in the wire type, or (see [`Feed::page`]) as values.
#[derive(Deserialize)]
struct WirePage<E> {
    events: Vec<E>,
    head: i64,
}

/// A client of the feed. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    page_size: u32,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("base", &self.base).field("page_size", &self.page_size).finish_non_exhaustive()
    }
}

impl Feed {
    pub fn new(base: &str, token: Option<String>, page_size: u32, timeout: Duration) -> Result<Feed, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Feed { http, base: base.trim_end_matches('/').to_owned(), token, page_size })
    }

    /// The events after `after` (at most the page size, or `limit` if smaller), and the head.
    pub async fn page(&self, after: i64, limit: Option<u32>) -> Result<Page, FeedError> {
        let limit = limit.map_or(self.page_size, |l| l.min(self.page_size));
        let url = format!("{}/events?after={after}&limit={limit}", self.base);
        let mut request = self.http.get(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let unreachable = |source| FeedError::Unreachable { url: format!("{}/events", self.base), source };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            let mut body = response.text().await.unwrap_or_default();
            body.truncate(512);
            return Err(FeedError::Status { status: status.as_u16(), body });
        }
        let bytes = response.bytes().await.map_err(unreachable)?;
        let (events, head) = match serde_json::from_slice::<WirePage<Wire>>(&bytes) {
            Ok(page) => (page.events.into_iter().map(Event::from_wire).collect::<Result<Vec<_>, _>>()?, page.head),
            // Read again as values, only to tell a body that is not a page from an event of the
            // page that is not an event, with the same errors as ever.
            Err(_) => {
                let page: WirePage<Value> =
                    serde_json::from_slice(&bytes).map_err(|e| FeedError::Decode(e.to_string()))?;
                (page.events.into_iter().map(Event::from_value).collect::<Result<Vec<_>, _>>()?, page.head)
            }
        };
        if let Some(w) = events.windows(2).find(|w| w[1].position <= w[0].position) {
            return Err(FeedError::Decode(format!("positions out of order: {} then {}", w[0].position, w[1].position)));
        }
        Ok(Page { events, head })
    }
}
