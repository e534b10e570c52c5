//! Keeping the search index in step with the store: records become [`Item`]s here, the
//! only place that decides what of a record is indexed (names, descriptions, tags, a
//! module's custom name and its driver's names — never settings, notes, mailboxes or
//! endpoints).
//!
//! Every change is written to the store first and then to the index, under one lock that
//! a rebuild also holds from its first read of the store to its commit, and each index
//! update re-reads the record from the store: so the index converges on what the store
//! holds whatever order concurrent requests finish in. An index write that fails is
//! logged, marks the index stale and starts a rebuild in the background; the request that
//! caused it still succeeds (the store is the truth).

use std::collections::HashMap;
use std::sync::Arc;

use super::{Control, ControlError};
use crate::search::{Item, Kind, Results, SearchError, SearchQuery};
use crate::store::{
    DriverRecord, ListQuery, ModuleFilter, ModuleRecord, Store, StoreError, System, Zone,
};

fn zone_item(zone: &Zone) -> Item {
    Item {
        id: zone.id.clone(),
        kind: Some(Kind::Zone),
        name: zone.name.clone(),
        description: zone.description.clone(),
        tags: zone.tags.clone(),
        zones: std::iter::once(zone.id.clone())
            .chain(zone.parent_id.clone())
            .collect(),
        other: Vec::new(),
    }
}

fn system_item(system: &System) -> Item {
    Item {
        id: system.id.clone(),
        kind: Some(Kind::System),
        name: system.name.clone(),
        description: system.description.clone(),
        tags: Vec::new(),
        zones: system.zones.clone(),
        other: Vec::new(),
    }
}

fn driver_item(driver: &DriverRecord) -> Item {
    let description = driver
        .metadata
        .get("description")
        .and_then(|d| d.as_str())
        .unwrap_or_default()
        .to_string();
    Item {
        id: driver.id.clone(),
        kind: Some(Kind::Driver),
        name: driver.name.clone(),
        description,
        tags: Vec::new(),
        zones: Vec::new(),
        other: vec![driver.module_name.clone()],
    }
}

/// A module is named by its custom name, else its driver's module name.
fn module_item(
    module: &ModuleRecord,
    driver: Option<&DriverRecord>,
    home: Option<&System>,
) -> Item {
    let name = module
        .custom_name
        .clone()
        .or_else(|| driver.map(|d| d.module_name.clone()))
        .unwrap_or_else(|| module.id.clone());
    Item {
        id: module.id.clone(),
        kind: Some(Kind::Module),
        name,
        description: String::new(),
        tags: Vec::new(),
        zones: home.map(|s| s.zones.clone()).unwrap_or_default(),
        other: driver
            .map(|d| vec![d.name.clone(), d.module_name.clone()])
            .unwrap_or_default(),
    }
}

/// Every page of a list.
async fn all<T, F, Fut>(mut page: F) -> Result<Vec<T>, StoreError>
where
    F: FnMut(ListQuery) -> Fut,
    Fut: std::future::Future<Output = Result<crate::store::Page<T>, StoreError>>,
{
    let mut items = Vec::new();
    let mut offset = 0;
    loop {
        let next = page(ListQuery {
            q: None,
            limit: ListQuery::MAX_LIMIT,
            offset,
        })
        .await?;
        let count = next.items.len() as i64;
        items.extend(next.items);
        offset += ListQuery::MAX_LIMIT;
        if count == 0 || offset >= next.total {
            return Ok(items);
        }
    }
}

/// Every item of the store.
async fn every_item(store: &Store) -> Result<Vec<Item>, StoreError> {
    let zones = all(|q| async move { store.list_zones(&q, None).await }).await?;
    let systems = all(|q| async move { store.list_systems(&q, None).await }).await?;
    let drivers = all(|q| async move { store.list_drivers(&q).await }).await?;
    let modules =
        all(|q| async move { store.list_modules(&q, &ModuleFilter::default()).await }).await?;
    let drivers_by_id: HashMap<&str, &DriverRecord> =
        drivers.iter().map(|d| (d.id.as_str(), d)).collect();
    let systems_by_id: HashMap<&str, &System> =
        systems.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut items: Vec<Item> = zones.iter().map(zone_item).collect();
    items.extend(systems.iter().map(system_item));
    items.extend(drivers.iter().map(driver_item));
    items.extend(modules.iter().map(|m| {
        module_item(
            m,
            drivers_by_id.get(m.driver_id.as_str()).copied(),
            m.system_id
                .as_deref()
                .and_then(|s| systems_by_id.get(s).copied()),
        )
    }));
    Ok(items)
}

/// What the index should hold for the record `id` of `kind`: `None` when the store has
/// no such record.
async fn current_item(store: &Store, kind: Kind, id: &str) -> Result<Option<Item>, StoreError> {
    let found = |result: Result<Item, StoreError>| match result {
        Ok(item) => Ok(Some(item)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    };
    match kind {
        Kind::Zone => found(store.zone(id).await.map(|z| zone_item(&z))),
        Kind::System => found(store.system(id).await.map(|s| system_item(&s))),
        Kind::Driver => found(store.driver(id).await.map(|d| driver_item(&d))),
        Kind::Module => {
            let module = match store.module(id).await {
                Ok(module) => module,
                Err(StoreError::NotFound { .. }) => return Ok(None),
                Err(error) => return Err(error),
            };
            let driver = store.driver(&module.driver_id).await.ok();
            let home = match &module.system_id {
                Some(system) => store.system(system).await.ok(),
                None => None,
            };
            Ok(Some(module_item(&module, driver.as_ref(), home.as_ref())))
        }
    }
}

impl Control {
    /// Search the index (empty results when this host has none).
    pub fn search(&self, query: &SearchQuery) -> Result<Results, SearchError> {
        match &self.inner.search {
            Some(search) => search.search(query),
            None => Ok(Results {
                hits: Vec::new(),
                total: 0,
            }),
        }
    }

    /// Close the index for writing (at shutdown): waits for a rebuild or an update in
    /// flight, then for the index's merges, and releases its directory.
    pub async fn close_search(&self) {
        let Some(search) = self.inner.search.clone() else {
            return;
        };
        let _guard = self.inner.index_lock.lock().await;
        let _ = tokio::task::spawn_blocking(move || search.close()).await;
    }

    /// Whether the index answers for the whole store (it exists and is not being rebuilt).
    pub fn search_ready(&self) -> bool {
        self.inner.search.as_ref().is_some_and(|s| !s.stale())
    }

    /// Bring the index up to date with the store after the record `id` of `kind` changed
    /// (or was deleted). Never fails: a failure is logged and starts a rebuild. A system's
    /// modules are updated with it (they are filed under its zones).
    pub async fn reindex(&self, kind: Kind, id: &str) {
        let Some(search) = self.inner.search.clone() else {
            return;
        };
        let _guard = self.inner.index_lock.lock().await;
        let mut targets = vec![(kind, id.to_string())];
        if kind == Kind::System
            && let Ok(system) = self.inner.store.system(id).await
        {
            targets.extend(system.modules.into_iter().map(|m| (Kind::Module, m)));
        }
        for (kind, id) in targets {
            let result = match current_item(&self.inner.store, kind, &id).await {
                Ok(Some(item)) => {
                    let search = Arc::clone(&search);
                    off_the_workers(move || search.upsert(&item)).await
                }
                Ok(None) => {
                    let (search, id) = (Arc::clone(&search), id.clone());
                    off_the_workers(move || search.delete(&id)).await
                }
                Err(error) => {
                    tracing::warn!(%id, "search index not updated: reading the store: {error}");
                    search.mark_stale();
                    break;
                }
            };
            if let Err(error) = result {
                tracing::error!(%id, "search index not updated, rebuilding it: {error}");
                search.mark_stale();
                break;
            }
        }
        drop(_guard);
        if search.stale() && search.writable() {
            let control = self.clone();
            tokio::spawn(async move { control.ensure_search().await });
        }
    }

    /// Rebuild the index from the store if it is stale (just created, or a write failed).
    pub async fn ensure_search(&self) {
        if self.inner.search.as_ref().is_some_and(|s| s.stale())
            && let Err(error) = self.rebuild_search().await
        {
            tracing::error!("search index rebuild failed: {error}");
        }
    }

    /// Rebuild the index from every zone, system, driver and module in the store.
    pub async fn rebuild_search(&self) -> Result<(), ControlError> {
        let Some(search) = self.inner.search.clone() else {
            return Ok(());
        };
        let _guard = self.inner.index_lock.lock().await;
        let started = std::time::Instant::now();
        let items = every_item(&self.inner.store).await?;
        let count = items.len();
        let rebuilt = tokio::task::spawn_blocking(move || search.rebuild(items))
            .await
            .map_err(|error| ControlError::Invalid(format!("search rebuild task: {error}")))?;
        rebuilt?;
        tracing::info!(count, elapsed = ?started.elapsed(), "search index rebuilt");
        Ok(())
    }
}

/// Run an index write (a commit: disk writes and an fsync) on the blocking pool, so that
/// it does not hold up one of the async workers that serve every request.
async fn off_the_workers(
    write: impl FnOnce() -> Result<(), SearchError> + Send + 'static,
) -> Result<(), SearchError> {
    tokio::task::spawn_blocking(write)
        .await
        .unwrap_or_else(|error| Err(SearchError::Task(error.to_string())))
}
