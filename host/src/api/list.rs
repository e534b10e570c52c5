//! List requests and responses: `?q=&limit=&offset=` in, a JSON array out with the total
//! number of matches in `X-Total-Count` and, when there are more, the next page's URL in
//! `Link: <…>; rel="next"` (as PlaceOS; `@placeos/ts-client` reads pages only from these
//! two headers).

use axum::Json;
use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};
use crate::search::{Kind, SearchQuery};
use crate::store::{ListQuery, Page, StoreError};

/// The list parameters every list endpoint takes. Numbers arrive as text and are parsed
/// here, so that a bad one is an error naming it (and so that a resource's own filters
/// can be flattened beside them).
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Zones, systems, modules, drivers: a search (words as prefixes allowing a typo or
    /// two, `"phrases"`; best match first). Other lists: records whose name contains
    /// this, ignoring case.
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

/// With a `q`, the page of `kind` records the search index finds for it (best first,
/// prefixes and typos as `/search`), each loaded from the store; `zone` narrows it to
/// items filed under a zone. `None` when there is no `q` or the index is still being
/// rebuilt: the store's name substring match answers then.
pub(super) async fn searched<T, F, Fut>(
    state: &ApiState,
    kind: Kind,
    query: &ListQuery,
    zone: Option<String>,
    load: F,
) -> Result<Option<Page<T>>, ApiError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let Some(text) = query.q.clone() else {
        return Ok(None);
    };
    if !state.control.search_ready() {
        return Ok(None);
    }
    let (limit, offset) = query.bounds();
    let search = SearchQuery {
        text,
        kinds: vec![kind],
        zone,
        tag: None,
        limit: usize::try_from(limit).unwrap_or(0),
        offset: usize::try_from(offset).unwrap_or(usize::MAX),
    };
    let control = state.control.clone();
    let results = tokio::task::spawn_blocking(move || control.search(&search))
        .await
        .map_err(|error| ApiError::internal(&error))?
        .map_err(|error| ApiError::internal(&error))?;
    let mut items = Vec::with_capacity(results.hits.len());
    for hit in results.hits {
        match load(hit.id).await {
            Ok(item) => items.push(item),
            // Deleted since it was found.
            Err(StoreError::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(Some(Page {
        items,
        total: i64::try_from(results.total).unwrap_or(i64::MAX),
    }))
}

/// A page as the response: the items, and the total in `X-Total-Count`.
pub(super) fn page<T: Serialize>(page: Page<T>) -> Response {
    let mut response = Json(page.items).into_response();
    if let Ok(total) = HeaderValue::from_str(&page.total.to_string()) {
        response.headers_mut().insert("x-total-count", total);
    }
    response
}

/// Add `Link: <PATH?offset=N&limit=M&…>; rel="next"` to a list response (one that carries
/// `X-Total-Count`) that has more after this page. The next page's URL repeats the
/// request's path and query with `offset` and `limit` first; every value is
/// percent-encoded, so the header has no `,` or `;` inside its `<…>`.
pub(super) async fn next_link(request: Request, next: Next) -> Response {
    // The URI as the client sent it, before `nest` took the API base off.
    let uri = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().clone(), |original| original.0.clone());
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let mut response = next.run(request).await;
    let total = response
        .headers()
        .get("x-total-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    if let Some(link) = total.and_then(|total| next_page(&path, &query, total))
        && let Ok(value) = HeaderValue::from_str(&link)
    {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

/// The `Link` header's value for the page after the one `query` asked for, if any.
fn next_page(path: &str, query: &str, total: i64) -> Option<String> {
    let params: ListParams = serde_urlencoded::from_str(query).ok()?;
    let (limit, offset) = params.query().ok()?.bounds();
    let next = offset.checked_add(limit)?;
    if limit == 0 || next >= total {
        return None;
    }
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    serializer.append_pair("offset", &next.to_string());
    serializer.append_pair("limit", &limit.to_string());
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name != "offset" && name != "limit" {
            serializer.append_pair(&name, &value);
        }
    }
    Some(format!("<{path}?{}>; rel=\"next\"", serializer.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_repeats_the_query_after_offset_and_limit() {
        assert_eq!(
            next_page("/api/engine/v2/systems", "q=room&limit=2", 5).as_deref(),
            Some("</api/engine/v2/systems?offset=2&limit=2&q=room>; rel=\"next\"")
        );
        assert_eq!(
            next_page("/api/engine/v2/zones", "offset=2&limit=2&q=a,b;c", 5).as_deref(),
            Some("</api/engine/v2/zones?offset=4&limit=2&q=a%2Cb%3Bc>; rel=\"next\"")
        );
        // The default page size, and the cap on it.
        assert_eq!(
            next_page("/x", "", 101).as_deref(),
            Some("</x?offset=100&limit=100>; rel=\"next\"")
        );
        assert_eq!(
            next_page("/x", "limit=5000", 1001).as_deref(),
            Some("</x?offset=1000&limit=1000>; rel=\"next\"")
        );
    }

    #[test]
    fn the_last_page_has_no_next() {
        assert_eq!(next_page("/x", "offset=3&limit=2", 5), None);
        assert_eq!(next_page("/x", "limit=2", 2), None);
        assert_eq!(next_page("/x", "limit=0", 2), None);
        assert_eq!(next_page("/x", "", 0), None);
        assert_eq!(next_page("/x", "offset=-1", 9), None);
    }
}
