//! Search: a tantivy index of the building's descriptive text — zone, system, module and
//! driver names, descriptions, tags and a few other descriptive fields — queried with
//! prefix and fuzzy matching, phrases, and filters by type, zone and tag.
//!
//! This module stands alone: it knows nothing of the store. Callers hand it [`Item`]s
//! (built from records by the control layer), and it never sees settings, notes, mailboxes
//! or anything else that could hold a secret, because [`Item`] has no field for them.
//!
//! One writer behind a mutex; every change is committed at once and the reader reloaded
//! before the call returns, so a search right after a write sees it. The on-disk index
//! carries a schema version ([`SCHEMA_VERSION`]) in a file beside it; an index that is
//! missing, will not open, or has another version is thrown away and recreated empty, and
//! [`Search::stale`] says so until the caller has rebuilt it ([`Search::rebuild`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, PhraseQuery, Query, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TEXT, TantivyDocument, Value,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Term};

use crate::html::escape;

/// The version of the index's schema and of what goes into it. Raise it whenever either
/// changes: an index of another version is rebuilt at start.
pub const SCHEMA_VERSION: u32 = 1;

/// The file beside the index that holds [`SCHEMA_VERSION`].
const VERSION_FILE: &str = "warden-schema-version";

/// Results past this many (offset + limit) are not returned, only counted: ranking keeps
/// that many in memory.
pub const MAX_WINDOW: usize = 10_000;

/// The writer's memory budget (tantivy's minimum is 15 MB).
const WRITER_MEMORY: usize = 20_000_000;

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// tantivy failed.
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The index directory could not be prepared.
    #[error("search index directory {path}: {error}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The blocking task that wrote the index did not finish.
    #[error("search index write task: {0}")]
    Task(String),
}

/// What an indexed item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A zone.
    Zone,
    /// A system (room).
    System,
    /// A module (device).
    Module,
    /// A driver.
    Driver,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Zone, Kind::System, Kind::Module, Kind::Driver];

    /// The name used in the index and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Zone => "zone",
            Kind::System => "system",
            Kind::Module => "module",
            Kind::Driver => "driver",
        }
    }

    /// The kind named `text` (singular or plural).
    pub fn parse(text: &str) -> Option<Kind> {
        match text.trim().to_ascii_lowercase().trim_end_matches('s') {
            "zone" => Some(Kind::Zone),
            "system" => Some(Kind::System),
            "module" => Some(Kind::Module),
            "driver" => Some(Kind::Driver),
            _ => None,
        }
    }
}

/// One thing to index. It has no field for settings, notes or mailboxes: what is not
/// here cannot be found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Item {
    /// The record's id.
    pub id: String,
    /// What it is.
    pub kind: Option<Kind>,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its tags (zones).
    pub tags: Vec<String>,
    /// The zones it is filed under: a zone's own id and its parent's, a system's zones, a
    /// module's home system's zones.
    pub zones: Vec<String>,
    /// Other descriptive names: a module's custom name and its driver's name and module
    /// name; a driver's module name.
    pub other: Vec<String>,
}

/// What to look for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchQuery {
    /// Words (each matched as a prefix, allowing typos) and `"quoted phrases"`; every one
    /// must match. Empty matches everything the filters allow.
    pub text: String,
    /// Only these kinds (empty: every kind).
    pub kinds: Vec<Kind>,
    /// Only items filed under this zone.
    pub zone: Option<String>,
    /// Only items with this tag.
    pub tag: Option<String>,
    /// At most this many.
    pub limit: usize,
    /// After skipping this many (results past [`MAX_WINDOW`] are only counted).
    pub offset: usize,
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Hit {
    /// The record's id.
    pub id: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// How well it matched (higher is better).
    pub score: f32,
    /// The fields that matched, HTML-escaped, with the matching words in `<b>…</b>`.
    pub highlights: BTreeMap<String, String>,
}

/// A page of results and how many match in all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Results {
    /// This page, best first.
    pub hits: Vec<Hit>,
    /// How many match, over every page.
    pub total: usize,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    kind: Field,
    name: Field,
    description: Field,
    tags: Field,
    tag: Field,
    zone: Field,
    other: Field,
}

/// The text fields searched, with how much a match in each counts.
const BOOSTS: [(&str, f32); 4] = [
    ("name", 4.0),
    ("other", 2.0),
    ("tags", 1.5),
    ("description", 1.0),
];

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED),
        kind: builder.add_text_field("kind", STRING | STORED),
        name: builder.add_text_field("name", TEXT | STORED),
        description: builder.add_text_field("description", TEXT | STORED),
        tags: builder.add_text_field("tags", TEXT | STORED),
        tag: builder.add_text_field("tag", STRING),
        zone: builder.add_text_field("zone", STRING),
        other: builder.add_text_field("other", TEXT | STORED),
    };
    (builder.build(), fields)
}

/// The search index. Share it behind an `Arc`.
pub struct Search {
    index: Index,
    fields: Fields,
    /// Taken only when the index is dropped (to wait for merges).
    writer: Mutex<Option<IndexWriter>>,
    reader: IndexReader,
    stale: AtomicBool,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Search {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Search")
            .field("path", &self.path)
            .field("stale", &self.stale())
            .finish_non_exhaustive()
    }
}

impl Drop for Search {
    /// Wait for merges in flight, so that nothing writes to the directory after the index
    /// is gone.
    fn drop(&mut self) {
        self.close();
    }
}

impl Search {
    /// An empty index in memory (tests, and hosts that do not keep one on disk). It is
    /// [`stale`](Search::stale) until rebuilt.
    pub fn in_memory() -> Result<Search, SearchError> {
        let (schema, fields) = schema();
        Search::from_index(Index::create_in_ram(schema), fields, None, true)
    }

    /// The index in `dir`, or a new empty one there when it is missing, does not open, or
    /// has another schema version (then it is [`stale`](Search::stale) until rebuilt).
    pub fn open(dir: &Path) -> Result<Search, SearchError> {
        let (schema, fields) = schema();
        let version = std::fs::read_to_string(dir.join(VERSION_FILE)).ok();
        if version.as_deref().map(str::trim) == Some(SCHEMA_VERSION.to_string().as_str()) {
            match Search::open_existing(dir, fields) {
                Ok(search) => return Ok(search),
                // Another process (or another index in this one) is using it: leave it.
                Err(SearchError::Index(error @ tantivy::TantivyError::LockFailure(..))) => {
                    return Err(SearchError::Index(error));
                }
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), "search index unusable, rebuilding: {error}")
                }
            }
        } else if dir.exists() {
            tracing::info!(dir = %dir.display(), "search index missing or of another version; rebuilding");
        }
        let io = |error| SearchError::Directory {
            path: dir.to_path_buf(),
            error,
        };
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io)?;
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let index = Index::create_in_dir(dir, schema)?;
        let search = Search::from_index(index, fields, Some(dir.to_path_buf()), true)?;
        std::fs::write(dir.join(VERSION_FILE), SCHEMA_VERSION.to_string()).map_err(io)?;
        Ok(search)
    }

    fn open_existing(dir: &Path, fields: Fields) -> Result<Search, SearchError> {
        let index = Index::open_in_dir(dir)?;
        if index.schema() != schema().0 {
            return Err(SearchError::Index(tantivy::TantivyError::SchemaError(
                "the stored schema differs".to_string(),
            )));
        }
        let search = Search::from_index(index, fields, Some(dir.to_path_buf()), false)?;
        // Read every segment once, so a damaged file shows now rather than in a query.
        let searcher = search.reader.searcher();
        searcher.search(&AllQuery, &Count)?;
        for segment in searcher.segment_readers() {
            let store = segment
                .get_store_reader(1)
                .map_err(tantivy::TantivyError::from)?;
            for doc in segment.doc_ids_alive() {
                store.get::<TantivyDocument>(doc)?;
            }
        }
        Ok(search)
    }

    fn from_index(
        index: Index,
        fields: Fields,
        path: Option<PathBuf>,
        stale: bool,
    ) -> Result<Search, SearchError> {
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Search {
            index,
            fields,
            writer: Mutex::new(Some(writer)),
            reader,
            stale: AtomicBool::new(stale),
            path,
        })
    }

    /// Stop writing: wait for merges in flight and release the directory's writer lock.
    /// Searches still work; writes fail from now on.
    pub fn close(&self) {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer
            && let Err(error) = writer.wait_merging_threads()
        {
            tracing::warn!("search index: merges did not finish: {error}");
        }
    }

    /// Whether it still takes writes (not [`closed`](Search::close)).
    pub fn writable(&self) -> bool {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether the index may lack items the store has: it was just created, or a write to
    /// it failed. Cleared by [`Search::rebuild`].
    pub fn stale(&self) -> bool {
        self.stale.load(Ordering::SeqCst)
    }

    /// Mark the index as needing a rebuild (after a failed write).
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::SeqCst);
    }

    /// The directory it lives in (none in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn document(&self, item: &Item, kind: Kind) -> TantivyDocument {
        let f = self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, &item.id);
        doc.add_text(f.kind, kind.as_str());
        doc.add_text(f.name, &item.name);
        doc.add_text(f.description, &item.description);
        for tag in &item.tags {
            doc.add_text(f.tags, tag);
            doc.add_text(f.tag, tag.to_lowercase());
        }
        for zone in &item.zones {
            doc.add_text(f.zone, zone);
        }
        for other in &item.other {
            doc.add_text(f.other, other);
        }
        doc
    }

    /// Add `item`, replacing what the index had under its id; committed when this returns.
    pub fn upsert(&self, item: &Item) -> Result<(), SearchError> {
        self.write(|writer, this| {
            writer.delete_term(Term::from_field_text(this.fields.id, &item.id));
            if let Some(kind) = item.kind {
                writer.add_document(this.document(item, kind))?;
            }
            Ok(())
        })
    }

    /// Remove the item `id`; committed when this returns.
    pub fn delete(&self, id: &str) -> Result<(), SearchError> {
        self.write(|writer, this| {
            writer.delete_term(Term::from_field_text(this.fields.id, id));
            Ok(())
        })
    }

    /// Replace the whole index with `items` in one commit, and clear
    /// [`stale`](Search::stale).
    pub fn rebuild(&self, items: impl IntoIterator<Item = Item>) -> Result<(), SearchError> {
        self.write(|writer, this| {
            writer.delete_all_documents()?;
            for item in items {
                if let Some(kind) = item.kind {
                    writer.add_document(this.document(&item, kind))?;
                }
            }
            Ok(())
        })?;
        self.stale.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn write(
        &self,
        change: impl FnOnce(&mut IndexWriter, &Search) -> Result<(), SearchError>,
    ) -> Result<(), SearchError> {
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(writer) = guard.as_mut() else {
            return Err(SearchError::Index(tantivy::TantivyError::InternalError(
                "the index is closing".to_string(),
            )));
        };
        let result = change(writer, self).and_then(|()| Ok(writer.commit().map(|_| ())?));
        if let Err(error) = result {
            // Drop what this change half did; the caller marks the index stale.
            let _ = writer.rollback();
            return Err(error);
        }
        drop(guard);
        self.reader.reload()?;
        Ok(())
    }

    /// Bytes the index takes on disk (0 in memory).
    pub fn size_on_disk(&self) -> u64 {
        let Some(path) = &self.path else { return 0 };
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Search.
    pub fn search(&self, query: &SearchQuery) -> Result<Results, SearchError> {
        let (built, words) = self.build_query(query)?;
        let searcher = self.reader.searcher();
        // Ranking keeps offset + limit results in memory: pages end at MAX_WINDOW.
        let limit = query.limit.min(MAX_WINDOW.saturating_sub(query.offset));
        let mut hits = Vec::new();
        if limit == 0 {
            let total = searcher.search(&built, &Count)?;
            return Ok(Results { hits, total });
        }
        let (top, total) = searcher.search(
            &built,
            &(
                TopDocs::with_limit(limit)
                    .and_offset(query.offset)
                    .order_by_score(),
                Count,
            ),
        )?;
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = |field: Field| -> Vec<String> {
                doc.get_all(field)
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            let first = |field: Field| text(field).into_iter().next().unwrap_or_default();
            let Some(kind) = Kind::parse(&first(self.fields.kind)) else {
                continue;
            };
            let mut highlights = BTreeMap::new();
            for (name, field) in [
                ("name", self.fields.name),
                ("description", self.fields.description),
                ("tags", self.fields.tags),
                ("other", self.fields.other),
            ] {
                let marked: Vec<String> = text(field)
                    .iter()
                    .filter_map(|value| highlight(value, &words))
                    .collect();
                if !marked.is_empty() {
                    highlights.insert(name.to_string(), marked.join(", "));
                }
            }
            hits.push(Hit {
                id: first(self.fields.id),
                kind,
                name: first(self.fields.name),
                description: first(self.fields.description),
                score,
                highlights,
            });
        }
        Ok(Results { hits, total })
    }

    /// The tantivy query for `query`, and the words to highlight.
    fn build_query(
        &self,
        query: &SearchQuery,
    ) -> Result<(BooleanQuery, Vec<Vec<String>>), SearchError> {
        let f = self.fields;
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut highlight_words = Vec::new();
        for part in parse(&query.text) {
            match part {
                Part::Word(word) => {
                    let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                    for (name, boost) in BOOSTS {
                        let field = self.field(name)?;
                        let term = Term::from_field_text(field, &word);
                        let exact = TermQuery::new(term.clone(), IndexRecordOption::WithFreqs);
                        any.push((
                            Occur::Should,
                            Box::new(BoostQuery::new(Box::new(exact), boost * 2.0)),
                        ));
                        let fuzzy = FuzzyTermQuery::new_prefix(term, distance(&word), true);
                        any.push((
                            Occur::Should,
                            Box::new(BoostQuery::new(Box::new(fuzzy), boost)),
                        ));
                    }
                    must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
                    highlight_words.push(vec![word]);
                }
                Part::Phrase(words) => {
                    let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                    for (name, boost) in BOOSTS {
                        let field = self.field(name)?;
                        let terms: Vec<Term> = words
                            .iter()
                            .map(|w| Term::from_field_text(field, w))
                            .collect();
                        let inner: Box<dyn Query> = if terms.len() == 1 {
                            let term = terms.into_iter().next().ok_or_else(|| {
                                tantivy::TantivyError::InvalidArgument("empty phrase".into())
                            })?;
                            Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
                        } else {
                            Box::new(PhraseQuery::new(terms))
                        };
                        any.push((Occur::Should, Box::new(BoostQuery::new(inner, boost * 2.0))));
                    }
                    must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
                    highlight_words.push(words);
                }
            }
        }
        if !query.kinds.is_empty() {
            let kinds = query
                .kinds
                .iter()
                .map(|kind| {
                    let term = Term::from_field_text(f.kind, kind.as_str());
                    let q: Box<dyn Query> =
                        Box::new(TermQuery::new(term, IndexRecordOption::Basic));
                    (Occur::Should, q)
                })
                .collect();
            must.push((Occur::Must, filter(BooleanQuery::new(kinds))));
        }
        if let Some(zone) = &query.zone {
            let term = Term::from_field_text(f.zone, zone);
            must.push((
                Occur::Must,
                filter(TermQuery::new(term, IndexRecordOption::Basic)),
            ));
        }
        if let Some(tag) = &query.tag {
            let term = Term::from_field_text(f.tag, &tag.to_lowercase());
            must.push((
                Occur::Must,
                filter(TermQuery::new(term, IndexRecordOption::Basic)),
            ));
        }
        if must.is_empty() {
            must.push((Occur::Must, Box::new(AllQuery)));
        }
        Ok((BooleanQuery::new(must), highlight_words))
    }

    fn field(&self, name: &str) -> Result<Field, SearchError> {
        Ok(self.index.schema().get_field(name)?)
    }
}

/// A filter: matches without adding to the score.
fn filter(query: impl Query) -> Box<dyn Query> {
    Box::new(BoostQuery::new(Box::new(query), 0.0))
}

/// How many typos a word may have: none up to two letters, one up to five, two beyond.
fn distance(word: &str) -> u8 {
    match word.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Part {
    Word(String),
    Phrase(Vec<String>),
}

/// Words as tantivy's default tokenizer splits and lower-cases them.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && w.len() <= 40)
        .map(str::to_lowercase)
        .collect()
}

/// Split a query into words and `"quoted phrases"` (an unclosed quote runs to the end).
fn parse(text: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    for (i, chunk) in text.split('"').enumerate() {
        if i % 2 == 1 {
            let phrase = words(chunk);
            if !phrase.is_empty() {
                parts.push(Part::Phrase(phrase));
            }
        } else {
            parts.extend(words(chunk).into_iter().map(Part::Word));
        }
    }
    parts
}

/// `value`, HTML-escaped, with every word that matches one of `queries` in `<b>…</b>`;
/// `None` when nothing in it matches. A query word matches a word it is a prefix of, or
/// whose start is within its typo allowance.
fn highlight(value: &str, queries: &[Vec<String>]) -> Option<String> {
    let mut out = String::new();
    let mut matched = false;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String, matched: &mut bool| {
        if word.is_empty() {
            return;
        }
        let lower = word.to_lowercase();
        let hit = queries.iter().flatten().any(|q| word_matches(&lower, q));
        if hit {
            *matched = true;
            out.push_str("<b>");
            out.push_str(&escape(word));
            out.push_str("</b>");
        } else {
            out.push_str(&escape(word));
        }
        word.clear();
    };
    for c in value.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out, &mut matched);
            out.push_str(&escape(c.encode_utf8(&mut [0; 4])));
        }
    }
    flush(&mut word, &mut out, &mut matched);
    matched.then_some(out)
}

fn word_matches(word: &str, query: &str) -> bool {
    if word.starts_with(query) {
        return true;
    }
    let allowed = usize::from(distance(query));
    if allowed == 0 {
        return false;
    }
    let query: Vec<char> = query.chars().collect();
    let word: Vec<char> = word.chars().collect();
    // The best distance between the query and any prefix of the word.
    let mut previous: Vec<usize> = (0..=query.len()).collect();
    let mut best = previous.last().copied().unwrap_or(0);
    for wc in &word {
        let mut current = vec![previous.first().copied().unwrap_or(0) + 1];
        for (j, qc) in query.iter().enumerate() {
            let substitute = previous.get(j).copied().unwrap_or(usize::MAX) + usize::from(wc != qc);
            let insert = current.get(j).copied().unwrap_or(usize::MAX) + 1;
            let delete = previous.get(j + 1).copied().unwrap_or(usize::MAX) + 1;
            current.push(substitute.min(insert).min(delete));
        }
        best = best.min(current.last().copied().unwrap_or(usize::MAX));
        previous = current;
    }
    best <= allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, kind: Kind, name: &str, description: &str) -> Item {
        Item {
            id: id.to_string(),
            kind: Some(kind),
            name: name.to_string(),
            description: description.to_string(),
            ..Item::default()
        }
    }

    fn ids(search: &Search, text: &str) -> Vec<String> {
        search
            .search(&SearchQuery {
                text: text.to_string(),
                limit: 10,
                ..SearchQuery::default()
            })
            .unwrap()
            .hits
            .into_iter()
            .map(|h| h.id)
            .collect()
    }

    fn building() -> Search {
        let search = Search::in_memory().unwrap();
        search
            .rebuild([
                item(
                    "sys-1",
                    Kind::System,
                    "Boardroom",
                    "The big room with a projector",
                ),
                item("sys-2", Kind::System, "Huddle", "Next to the boardroom"),
                Item {
                    tags: vec!["building".into()],
                    zones: vec!["zone-hq".into()],
                    ..item("zone-hq", Kind::Zone, "Headquarters", "Main <office>")
                },
                Item {
                    other: vec!["Display".into()],
                    zones: vec!["zone-hq".into()],
                    ..item("mod-1", Kind::Module, "Samsung QM85", "")
                },
            ])
            .unwrap();
        search
    }

    #[test]
    fn a_name_match_outranks_a_description_match() {
        assert_eq!(ids(&building(), "boardroom"), ["sys-1", "sys-2"]);
    }

    #[test]
    fn prefixes_typos_and_phrases_match() {
        let search = building();
        assert_eq!(ids(&search, "headq"), ["zone-hq"]);
        assert_eq!(ids(&search, "hedquarters"), ["zone-hq"]);
        assert_eq!(ids(&search, "haedqaurters"), ["zone-hq"]);
        assert_eq!(ids(&search, "displ"), ["mod-1"]);
        assert_eq!(ids(&search, "\"big room\""), ["sys-1"]);
        assert!(ids(&search, "\"room big\"").is_empty());
        assert!(ids(&search, "zzzz").is_empty());
    }

    #[test]
    fn filters_narrow_and_counts_are_totals() {
        let search = building();
        let results = search
            .search(&SearchQuery {
                zone: Some("zone-hq".into()),
                limit: 1,
                ..SearchQuery::default()
            })
            .unwrap();
        assert_eq!(results.total, 2);
        assert_eq!(results.hits.len(), 1);
        let results = search
            .search(&SearchQuery {
                kinds: vec![Kind::Zone],
                tag: Some("Building".into()),
                limit: 10,
                ..SearchQuery::default()
            })
            .unwrap();
        assert_eq!(results.total, 1);
    }

    #[test]
    fn highlights_are_escaped() {
        let search = building();
        let results = search
            .search(&SearchQuery {
                text: "office".into(),
                limit: 10,
                ..SearchQuery::default()
            })
            .unwrap();
        let hit = results.hits.first().unwrap();
        assert_eq!(hit.highlights["description"], "Main &lt;<b>office</b>&gt;");
    }

    #[test]
    fn upsert_replaces_and_delete_removes() {
        let search = building();
        search
            .upsert(&item("sys-1", Kind::System, "Theatre", ""))
            .unwrap();
        assert_eq!(ids(&search, "theatre"), ["sys-1"]);
        assert_eq!(ids(&search, "boardroom"), ["sys-2"]);
        search.delete("sys-1").unwrap();
        assert!(ids(&search, "theatre").is_empty());
    }

    #[test]
    fn a_damaged_or_old_index_is_recreated_stale() {
        let dir = std::env::temp_dir().join(format!("warden-search-{}", fastrand::u64(..)));
        let search = Search::open(&dir).unwrap();
        assert!(search.stale());
        search
            .rebuild([item("sys-1", Kind::System, "Boardroom", "")])
            .unwrap();
        drop(search);
        let search = Search::open(&dir).unwrap();
        assert!(!search.stale());
        assert_eq!(ids(&search, "boardroom"), ["sys-1"]);
        drop(search);
        std::fs::write(dir.join(VERSION_FILE), "0").unwrap();
        let search = Search::open(&dir).unwrap();
        assert!(search.stale());
        assert!(ids(&search, "boardroom").is_empty());
        drop(search);
        std::fs::write(dir.join("meta.json"), "{ not json").unwrap();
        let search = Search::open(&dir).unwrap();
        assert!(search.stale());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
