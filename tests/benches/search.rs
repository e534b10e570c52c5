//! Search benchmark (issue 7): a synthetic building of 100,000 items (zones, rooms,
//! devices, drivers) indexed by `warden::search`, against the same data in PostgreSQL
//! full-text search (a `tsvector` column with a GIN index; `pg_trgm` for the typo
//! queries, which full-text search cannot answer). Results: docs/performance.md,
//! "Search (issue 7)".
//!
//! `cargo bench -p warden-tests --bench search` (`-- --quick` for 10,000 items).
//! PostgreSQL at `WARDEN_TEST_POSTGRES` or postgres://postgres@127.0.0.1:5432/postgres,
//! in a temporary database that is dropped afterwards; skipped with a note when it cannot
//! be reached.
//!
//! Every query asks for the best 20 and the total number of matches, as the API does.
//! - prefix: the first 3–5 letters of a word of the building's vocabulary;
//! - fuzzy: a whole vocabulary word with one letter changed (two for words of 6 letters
//!   or more);
//! - filtered: a prefix, systems only, in one building.

#[path = "support/stats.rs"]
mod stats;

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, PgConnection, Row};
use stats::Stats;
use warden::search::{Item, Kind, Search, SearchQuery};

const WORDS: &[&str] = &[
    "conference",
    "boardroom",
    "huddle",
    "auditorium",
    "theatre",
    "classroom",
    "lecture",
    "kitchen",
    "lounge",
    "reception",
    "library",
    "studio",
    "training",
    "meeting",
    "focus",
    "projector",
    "display",
    "camera",
    "microphone",
    "speaker",
    "amplifier",
    "switcher",
    "lighting",
    "blinds",
    "thermostat",
    "sensor",
    "occupancy",
    "controller",
    "matrix",
    "samsung",
    "panasonic",
    "epson",
    "sony",
    "crestron",
    "extron",
    "shure",
    "biamp",
    "north",
    "south",
    "east",
    "west",
    "level",
    "wing",
    "tower",
    "annex",
    "campus",
];

fn word(rng: &mut fastrand::Rng) -> &'static str {
    WORDS
        .get(rng.usize(..WORDS.len()))
        .copied()
        .unwrap_or("room")
}

fn sentence(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n).map(|_| word(rng)).collect::<Vec<_>>().join(" ")
}

/// The building: 40 buildings with 10 levels each (440 zones), 20,000 rooms, 200 drivers,
/// the rest devices.
fn building(total: usize, rng: &mut fastrand::Rng) -> (Vec<Item>, Vec<String>) {
    let mut items = Vec::with_capacity(total);
    let mut buildings = Vec::new();
    let mut levels = Vec::new();
    for b in 0..40 {
        let id = format!("zone-b{b}");
        buildings.push(id.clone());
        items.push(Item {
            id: id.clone(),
            kind: Some(Kind::Zone),
            name: format!("{} {} building {b}", word(rng), word(rng)),
            description: sentence(rng, 8),
            tags: vec!["building".into()],
            zones: vec![id.clone()],
            other: Vec::new(),
        });
        for l in 0..10 {
            let level = format!("zone-b{b}-l{l}");
            levels.push((level.clone(), id.clone()));
            items.push(Item {
                id: level.clone(),
                kind: Some(Kind::Zone),
                name: format!("Level {l} {}", word(rng)),
                description: sentence(rng, 6),
                tags: vec!["level".into()],
                zones: vec![level, id.clone()],
                other: Vec::new(),
            });
        }
    }
    let rooms = (total / 5).min(20_000);
    for r in 0..rooms {
        let (level, building) = levels.get(r % levels.len()).cloned().unwrap_or_default();
        items.push(Item {
            id: format!("sys-{r}"),
            kind: Some(Kind::System),
            name: format!("{} {} {}.{:02}", word(rng), word(rng), r % 10, r % 100),
            description: sentence(rng, 12),
            tags: Vec::new(),
            zones: vec![building, level],
            other: Vec::new(),
        });
    }
    for d in 0..200 {
        items.push(Item {
            id: format!("driver-{d}"),
            kind: Some(Kind::Driver),
            name: format!("{} {} driver", word(rng), word(rng)),
            description: sentence(rng, 10),
            tags: Vec::new(),
            zones: Vec::new(),
            other: vec![word(rng).to_string()],
        });
    }
    let mut m = 0;
    while items.len() < total {
        let (level, building) = levels.get(m % levels.len()).cloned().unwrap_or_default();
        items.push(Item {
            id: format!("mod-{m}"),
            kind: Some(Kind::Module),
            name: format!("{} {}", word(rng), word(rng)),
            description: String::new(),
            tags: Vec::new(),
            zones: vec![building, level],
            other: vec![format!("{} driver", word(rng)), word(rng).to_string()],
        });
        m += 1;
    }
    (items, buildings)
}

struct Queries {
    prefix: Vec<String>,
    fuzzy: Vec<String>,
    filtered: Vec<(String, String)>,
}

fn queries(n: usize, buildings: &[String], rng: &mut fastrand::Rng) -> Queries {
    let prefix = |rng: &mut fastrand::Rng| {
        let w = word(rng);
        w.chars().take(rng.usize(3..=5)).collect::<String>()
    };
    let typo = |rng: &mut fastrand::Rng| {
        let mut chars: Vec<char> = word(rng).chars().collect();
        let edits = if chars.len() >= 6 { 2 } else { 1 };
        for _ in 0..edits {
            let at = rng.usize(1..chars.len());
            if let Some(c) = chars.get_mut(at) {
                *c = if *c == 'x' { 'q' } else { 'x' };
            }
        }
        chars.into_iter().collect::<String>()
    };
    Queries {
        prefix: (0..n).map(|_| prefix(rng)).collect(),
        fuzzy: (0..n).map(|_| typo(rng)).collect(),
        filtered: (0..n)
            .map(|_| {
                let b = buildings
                    .get(rng.usize(..buildings.len()))
                    .cloned()
                    .unwrap_or_default();
                (prefix(rng), b)
            })
            .collect(),
    }
}

fn time<T>(samples: &mut Vec<Duration>, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    samples.push(start.elapsed());
    out
}

struct Figures {
    build: Duration,
    size: u64,
    prefix: Stats,
    fuzzy: Stats,
    filtered: Stats,
}

fn tantivy(items: &[Item], q: &Queries) -> anyhow::Result<Figures> {
    let dir = std::env::temp_dir().join(format!("warden-bench-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let search = Search::open(&dir)?;
    let start = Instant::now();
    search.rebuild(items.iter().cloned())?;
    let build = start.elapsed();
    let size = search.size_on_disk();
    let run = |text: &str, kinds: Vec<Kind>, zone: Option<String>| {
        search.search(&SearchQuery {
            text: text.to_string(),
            kinds,
            zone,
            tag: None,
            limit: 20,
            offset: 0,
        })
    };
    // Warm up.
    for text in q.prefix.iter().take(50) {
        run(text, Vec::new(), None)?;
    }
    let mut matched = 0usize;
    let mut samples = Vec::new();
    for text in &q.prefix {
        matched += time(&mut samples, || run(text, Vec::new(), None))?.total;
    }
    let prefix = Stats::of(std::mem::take(&mut samples));
    println!(
        "tantivy prefix:   {prefix}  (mean matches {})",
        matched / q.prefix.len().max(1)
    );
    matched = 0;
    for text in &q.fuzzy {
        matched += time(&mut samples, || run(text, Vec::new(), None))?.total;
    }
    let fuzzy = Stats::of(std::mem::take(&mut samples));
    println!(
        "tantivy fuzzy:    {fuzzy}  (mean matches {})",
        matched / q.fuzzy.len().max(1)
    );
    matched = 0;
    for (text, zone) in &q.filtered {
        matched += time(&mut samples, || {
            run(text, vec![Kind::System], Some(zone.clone()))
        })?
        .total;
    }
    let filtered = Stats::of(std::mem::take(&mut samples));
    println!(
        "tantivy filtered: {filtered}  (mean matches {})",
        matched / q.filtered.len().max(1)
    );
    drop(search);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Figures {
        build,
        size,
        prefix,
        fuzzy,
        filtered,
    })
}

async fn postgres(url: &str, items: &[Item], q: &Queries) -> anyhow::Result<Figures> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        .execute(&mut conn)
        .await?;
    sqlx::query(
        "CREATE TABLE items (id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, \
         description TEXT NOT NULL, tags TEXT NOT NULL, other TEXT NOT NULL, zones TEXT[] NOT NULL, \
         doc TSVECTOR GENERATED ALWAYS AS ( \
           setweight(to_tsvector('simple', name), 'A') || \
           setweight(to_tsvector('simple', other), 'B') || \
           setweight(to_tsvector('simple', tags), 'C') || \
           setweight(to_tsvector('simple', description), 'D')) STORED)",
    )
    .execute(&mut conn)
    .await?;
    let start = Instant::now();
    for chunk in items.chunks(5_000) {
        let column = |f: &dyn Fn(&Item) -> String| chunk.iter().map(f).collect::<Vec<String>>();
        sqlx::query(
            "INSERT INTO items (id, kind, name, description, tags, other, zones) \
             SELECT id, kind, name, description, tags, other, string_to_array(zones, ' ') \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
             AS t(id, kind, name, description, tags, other, zones)",
        )
        .bind(column(&|i| i.id.clone()))
        .bind(column(&|i| i.kind.map(Kind::as_str).unwrap_or("").to_string()))
        .bind(column(&|i| i.name.clone()))
        .bind(column(&|i| i.description.clone()))
        .bind(column(&|i| i.tags.join(" ")))
        .bind(column(&|i| i.other.join(" ")))
        .bind(column(&|i| i.zones.join(" ")))
        .execute(&mut conn)
        .await?;
    }
    for ddl in [
        "CREATE INDEX items_doc ON items USING GIN (doc)",
        "CREATE INDEX items_zones ON items USING GIN (zones)",
        "CREATE INDEX items_trgm ON items USING GIN ((name || ' ' || other || ' ' || tags || ' ' || description) gin_trgm_ops)",
        "ANALYZE items",
    ] {
        sqlx::query(ddl).execute(&mut conn).await?;
    }
    let build = start.elapsed();
    let size: i64 = sqlx::query("SELECT pg_total_relation_size('items')")
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
    // The best 20 by rank, with the total, in one statement.
    let prefix_sql = "SELECT id, count(*) OVER () FROM items, to_tsquery('simple', $1 || ':*') q \
                      WHERE doc @@ q ORDER BY ts_rank(doc, q) DESC LIMIT 20";
    let fuzzy_sql = "SELECT id, count(*) OVER () FROM items \
                     WHERE $1 <% (name || ' ' || other || ' ' || tags || ' ' || description) \
                     ORDER BY word_similarity($1, name || ' ' || other || ' ' || tags || ' ' || description) DESC LIMIT 20";
    let filtered_sql = "SELECT id, count(*) OVER () FROM items, to_tsquery('simple', $1 || ':*') q \
                        WHERE doc @@ q AND kind = 'system' AND zones @> ARRAY[$2] \
                        ORDER BY ts_rank(doc, q) DESC LIMIT 20";
    let mut samples = Vec::new();
    let mut out = Vec::new();
    for (sql, texts) in [(prefix_sql, &q.prefix), (fuzzy_sql, &q.fuzzy)] {
        let mut matched = 0i64;
        for text in texts {
            let start = Instant::now();
            let rows = sqlx::query(sql).bind(text).fetch_all(&mut conn).await?;
            samples.push(start.elapsed());
            matched += rows
                .first()
                .map(|r| r.try_get::<i64, _>(1))
                .transpose()?
                .unwrap_or(0);
        }
        let stats = Stats::of(std::mem::take(&mut samples));
        println!(
            "postgres {}: {stats}  (mean matches {})",
            if sql == prefix_sql {
                "prefix (tsvector)"
            } else {
                "fuzzy (pg_trgm)"
            },
            matched / i64::try_from(texts.len().max(1))?
        );
        out.push(stats);
    }
    let mut matched = 0i64;
    for (text, zone) in &q.filtered {
        let start = Instant::now();
        let rows = sqlx::query(filtered_sql)
            .bind(text)
            .bind(zone)
            .fetch_all(&mut conn)
            .await?;
        samples.push(start.elapsed());
        matched += rows
            .first()
            .map(|r| r.try_get::<i64, _>(1))
            .transpose()?
            .unwrap_or(0);
    }
    let filtered = Stats::of(samples);
    println!(
        "postgres filtered (tsvector): {filtered}  (mean matches {})",
        matched / i64::try_from(q.filtered.len().max(1))?
    );
    conn.close().await?;
    let mut out = out.into_iter();
    Ok(Figures {
        build,
        size: u64::try_from(size)?,
        prefix: out.next().context("prefix")?,
        fuzzy: out.next().context("fuzzy")?,
        filtered,
    })
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.1}x", b.as_secs_f64() / a.as_secs_f64().max(1e-9))
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (total, n) = if quick {
        (10_000, 300)
    } else {
        (100_000, 2_000)
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let (items, buildings) = building(total, &mut rng);
    let q = queries(n, &buildings, &mut rng);
    println!("items: {}, queries of each kind: {n}", items.len());
    let t = tantivy(&items, &q)?;
    println!(
        "tantivy: build {} ({:.0} items/s), index {:.1} MiB on disk",
        stats::fmt(t.build),
        items.len() as f64 / t.build.as_secs_f64(),
        t.size as f64 / 1_048_576.0
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let admin = std::env::var("WARDEN_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let name = format!("warden_bench_search_{}", std::process::id());
        let mut conn = match PgConnection::connect(&admin).await {
            Ok(conn) => conn,
            Err(error) => {
                println!("postgres: skipped, cannot connect: {error}");
                return anyhow::Ok(());
            }
        };
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let base = admin.rsplit_once('/').context("admin URL")?.0;
        let result = postgres(&format!("{base}/{name}"), &items, &q).await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
        let p = result?;
        println!(
            "postgres: build {} (insert + indexes), table and indexes {:.1} MiB",
            stats::fmt(p.build),
            p.size as f64 / 1_048_576.0
        );
        println!(
            "ratios (postgres / tantivy): build {}, size {:.1}x, prefix p50 {} p99 {}, fuzzy p50 {} p99 {}, filtered p50 {} p99 {}",
            ratio(t.build, p.build),
            p.size as f64 / t.size.max(1) as f64,
            ratio(t.prefix.p50, p.prefix.p50),
            ratio(t.prefix.p99, p.prefix.p99),
            ratio(t.fuzzy.p50, p.fuzzy.p50),
            ratio(t.fuzzy.p99, p.fuzzy.p99),
            ratio(t.filtered.p50, p.filtered.p50),
            ratio(t.filtered.p99, p.filtered.p99),
        );
        anyhow::Ok(())
    })?;
    Ok(())
}
