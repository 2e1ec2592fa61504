//! The Tantivy collector of a shard's part of a search: the top `limit` hits
//! in a total order (sort key, then document id), the total count and the
//! facet counts, in one pass.
//!
//! Ties are broken by document id rather than by Tantivy's internal doc
//! address, so the merged top-k is the same however documents are spread
//! over shards and segments.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DateTime, DocId, Score, SegmentOrdinal, SegmentReader};

use super::schema::{Kind, ID_FIELD};

/// A hit's sort value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SortValue {
    Score(Score),
    Int(i64),
    Float(f64),
    /// The document has no value for the sort field: always last.
    Missing,
}

/// What hits are ordered by.
#[derive(Debug, Clone)]
pub enum SortBy {
    /// Score, highest first.
    Score,
    /// A fast field of the given kind.
    Field { name: String, kind: Kind, descending: bool },
}

impl SortBy {
    /// Orders two values: `Less` ranks first.
    pub fn compare(&self, a: &SortValue, b: &SortValue) -> Ordering {
        let descending = match self {
            SortBy::Score => true,
            SortBy::Field { descending, .. } => *descending,
        };
        let natural = match (a, b) {
            (SortValue::Missing, SortValue::Missing) => return Ordering::Equal,
            (SortValue::Missing, _) => return Ordering::Greater,
            (_, SortValue::Missing) => return Ordering::Less,
            (SortValue::Score(x), SortValue::Score(y)) => x.total_cmp(y),
            (SortValue::Int(x), SortValue::Int(y)) => x.cmp(y),
            (SortValue::Float(x), SortValue::Float(y)) => x.total_cmp(y),
            // Mixed kinds never meet in one search; order them stably anyway.
            (x, y) => rank_of(x).cmp(&rank_of(y)),
        };
        if descending {
            natural.reverse()
        } else {
            natural
        }
    }
}

fn rank_of(value: &SortValue) -> u8 {
    match value {
        SortValue::Score(_) => 0,
        SortValue::Int(_) => 1,
        SortValue::Float(_) => 2,
        SortValue::Missing => 3,
    }
}

/// One hit of a shard.
#[derive(Debug, Clone)]
pub struct Hit {
    pub id: String,
    pub score: Score,
    pub sort: SortValue,
}

/// What one search pass returns.
#[derive(Debug, Default)]
pub struct Harvest {
    pub hits: Vec<Hit>,
    pub total: u64,
    /// Per facet field: value → documents.
    pub facets: HashMap<String, HashMap<String, u64>>,
    /// The deadline passed: the pass stopped early.
    pub expired: bool,
}

/// Collects the top `limit` hits after `after`, counts and facets.
pub struct TopCollector {
    pub limit: usize,
    pub sort: SortBy,
    pub after: Option<(SortValue, String)>,
    pub min_score: Option<Score>,
    pub facets: Vec<String>,
    pub deadline: Instant,
}

/// A hit in a per-segment heap, ordered so the worst one is the greatest.
struct Ranked {
    hit: Hit,
    sort: SortBy,
}

impl Ranked {
    fn cmp_rank(&self, other: &Ranked) -> Ordering {
        self.sort.compare(&self.hit.sort, &other.hit.sort).then_with(|| self.hit.id.cmp(&other.hit.id))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_rank(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_rank(other)
    }
}

/// Where a segment's sort values come from.
enum Source {
    Score,
    Int(Column<i64>),
    Float(Column<f64>),
    Date(Column<DateTime>),
    Absent,
}

impl Source {
    fn value(&self, doc: DocId, score: Score) -> SortValue {
        match self {
            Source::Score => SortValue::Score(score),
            Source::Int(c) => c.first(doc).map_or(SortValue::Missing, SortValue::Int),
            Source::Float(c) => c.first(doc).map_or(SortValue::Missing, SortValue::Float),
            Source::Date(c) => c.first(doc).map_or(SortValue::Missing, |d| SortValue::Int(d.into_timestamp_millis())),
            Source::Absent => SortValue::Missing,
        }
    }
}

/// The per-segment half of [`TopCollector`].
pub struct SegmentTop {
    limit: usize,
    sort: SortBy,
    after: Option<(SortValue, String)>,
    min_score: Option<Score>,
    source: Source,
    ids: Option<StrColumn>,
    heap: BinaryHeap<Ranked>,
    total: u64,
    facets: Vec<(String, Option<StrColumn>, HashMap<u64, u64>)>,
    deadline: Instant,
    seen: u32,
    expired: bool,
}

/// How many documents pass between deadline checks.
const DEADLINE_CHECK_EVERY: u32 = 4096;

impl SegmentTop {
    fn id(&self, doc: DocId) -> String {
        let mut id = String::new();
        if let Some(ids) = &self.ids {
            if let Some(ord) = ids.term_ords(doc).next() {
                let _ = ids.ord_to_str(ord, &mut id);
            }
        }
        id
    }

    fn consider(&mut self, doc: DocId, score: Score) {
        let value = self.source.value(doc, score);
        let mut id = None;
        if let Some((after_value, after_id)) = &self.after {
            match self.sort.compare(&value, after_value) {
                Ordering::Less => return,
                Ordering::Equal => {
                    let this = self.id(doc);
                    if this <= *after_id {
                        return;
                    }
                    id = Some(this);
                }
                Ordering::Greater => {}
            }
        }
        if self.heap.len() >= self.limit {
            let Some(worst) = self.heap.peek() else { return };
            match self.sort.compare(&value, &worst.hit.sort) {
                Ordering::Greater => return,
                Ordering::Equal => {
                    let this = id.take().unwrap_or_else(|| self.id(doc));
                    if this >= worst.hit.id {
                        return;
                    }
                    id = Some(this);
                }
                Ordering::Less => {}
            }
            self.heap.pop();
        }
        let id = id.unwrap_or_else(|| self.id(doc));
        self.heap.push(Ranked { hit: Hit { id, score, sort: value }, sort: self.sort.clone() });
    }
}

impl SegmentCollector for SegmentTop {
    type Fruit = Harvest;

    fn collect(&mut self, doc: DocId, score: Score) {
        if self.expired {
            return;
        }
        self.seen += 1;
        if self.seen.is_multiple_of(DEADLINE_CHECK_EVERY) && Instant::now() > self.deadline {
            self.expired = true;
            return;
        }
        if self.min_score.is_some_and(|min| score < min) {
            return;
        }
        self.total += 1;
        for (_, column, counts) in &mut self.facets {
            if let Some(column) = column {
                for ord in column.term_ords(doc) {
                    *counts.entry(ord).or_default() += 1;
                }
            }
        }
        if self.limit > 0 {
            self.consider(doc, score);
        }
    }

    fn harvest(self) -> Harvest {
        let mut facets = HashMap::new();
        for (field, column, counts) in self.facets {
            let mut named: HashMap<String, u64> = HashMap::with_capacity(counts.len());
            if let Some(column) = column {
                for (ord, count) in counts {
                    let mut value = String::new();
                    if column.ord_to_str(ord, &mut value).unwrap_or(false) {
                        *named.entry(value).or_default() += count;
                    }
                }
            }
            facets.insert(field, named);
        }
        let hits = self.heap.into_sorted_vec().into_iter().map(|r| r.hit).collect();
        Harvest { hits, total: self.total, facets, expired: self.expired }
    }
}

impl Collector for TopCollector {
    type Fruit = Harvest;
    type Child = SegmentTop;

    fn for_segment(&self, _ordinal: SegmentOrdinal, segment: &SegmentReader) -> tantivy::Result<SegmentTop> {
        let fast = segment.fast_fields();
        let source = match &self.sort {
            SortBy::Score => Source::Score,
            SortBy::Field { name, kind, .. } => {
                let column = match kind {
                    Kind::I64 => fast.column_opt::<i64>(name)?.map(Source::Int),
                    Kind::F64 => fast.column_opt::<f64>(name)?.map(Source::Float),
                    Kind::Date => fast.column_opt::<DateTime>(name)?.map(Source::Date),
                    _ => None,
                };
                column.unwrap_or(Source::Absent)
            }
        };
        let facets = self
            .facets
            .iter()
            .map(|field| Ok((field.clone(), fast.str(field)?, HashMap::new())))
            .collect::<tantivy::Result<Vec<_>>>()?;
        Ok(SegmentTop {
            limit: self.limit,
            sort: self.sort.clone(),
            after: self.after.clone(),
            min_score: self.min_score,
            source,
            ids: fast.str(ID_FIELD)?,
            heap: BinaryHeap::with_capacity(self.limit.min(10_000) + 1),
            total: 0,
            facets,
            deadline: self.deadline,
            seen: 0,
            expired: false,
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(&self, fruits: Vec<Harvest>) -> tantivy::Result<Harvest> {
        let mut merged = Harvest::default();
        for fruit in fruits {
            merged.hits.extend(fruit.hits);
            merged.total += fruit.total;
            merged.expired |= fruit.expired;
            for (field, counts) in fruit.facets {
                let into = merged.facets.entry(field).or_default();
                for (value, count) in counts {
                    *into.entry(value).or_default() += count;
                }
            }
        }
        let sort = &self.sort;
        merged.hits.sort_by(|a, b| sort.compare(&a.sort, &b.sort).then_with(|| a.id.cmp(&b.id)));
        merged.hits.truncate(self.limit);
        Ok(merged)
    }
}
