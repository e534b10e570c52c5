//! List requests and responses: `?q=&limit=&offset=` in, a JSON array out with the total
//! number of matches in `X-Total-Count` (as PlaceOS).

use axum::Json;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::store::{ListQuery, Page};

/// The list parameters every list endpoint takes. Numbers arrive as text and are parsed
/// here, so that a bad one is an error naming it (and so that a resource's own filters
/// can be flattened beside them).
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Only records whose name contains this, ignoring case.
    pub q: Option<String>,
    /// At most this many (default 100; more than 1,000 returns 1,000).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub limit: Option<String>,
    /// After skipping this many.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub offset: Option<String>,
}

impl ListParams {
    pub(super) fn query(&self) -> Result<ListQuery, ApiError> {
        let number = |field: &str, text: &Option<String>, default: i64| match text {
            None => Ok(default),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::invalid(field, "must be a whole number, 0 or more")),
        };
        Ok(ListQuery {
            q: self.q.clone().filter(|q| !q.is_empty()),
            limit: number("limit", &self.limit, ListQuery::default().limit)?,
            offset: number("offset", &self.offset, 0)?,
        })
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
