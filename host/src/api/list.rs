//! List requests and responses: `?q=&limit=&offset=` in, a JSON array out with the total
//! number of matches in `X-Total-Count` (as PlaceOS).

use axum::Json;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::store::{ListQuery, Page};

/// The list parameters every list endpoint takes.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct ListParams {
    /// Only records whose name contains this, ignoring case.
    pub q: Option<String>,
    /// At most this many (default 100, at most 1,000).
    pub limit: Option<i64>,
    /// After skipping this many.
    pub offset: Option<i64>,
}

impl ListParams {
    pub(super) fn query(&self) -> ListQuery {
        let defaults = ListQuery::default();
        ListQuery {
            q: self.q.clone().filter(|q| !q.is_empty()),
            limit: self.limit.unwrap_or(defaults.limit),
            offset: self.offset.unwrap_or(0),
        }
    }
}

/// A page as the response: the items, and the total in `X-Total-Count`.
pub(super) fn page<T: Serialize>(page: Page<T>) -> Response {
    let mut response = Json(page.items).into_response();
    if let Ok(total) = HeaderValue::from_str(&page.total.to_string()) {
        response.headers_mut().insert("x-total-count", total);
    }
    response
}
