//! The router: an embedder, an index over labeled examples, and the vote.
//!
//! Routing takes a read lock on the index for the search only; adding examples embeds them
//! first, outside any lock, then takes the write lock just to insert, so live additions never
//! stall concurrent routing for long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::config::Config;
use crate::corpus::{read_examples, Example, Label};
use crate::embed::{Embedder, EmbeddingCache};
use crate::error::{Error, Result};
use crate::index::{
    new_index, uses_hnsw, FlatIndex, Hit, HnswIndex, HnswParams, IndexKind, VectorIndex,
};
use crate::tier::Tiers;
use crate::vote::{vote, Basis, CategoryBaseline, Evidence, Policy, TierScores};

/// Texts embedded per call while building: large enough to sort by length and batch well.
const BUILD_CHUNK: usize = 256;

/// What [`Router::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SyncReport {
    pub added: usize,
    pub relabelled: usize,
    /// Known ids whose text changed in the file: their vectors stay until a restart.
    pub text_changed: usize,
    /// Indexed examples the file no longer has: routable until a restart.
    pub missing_from_file: usize,
}

/// A routing decision and everything needed to see why it was made.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Decision {
    /// The request's id (`x-request-id` in the server); feedback refers to it. `None` outside
    /// a request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub tier: String,
    pub model: String,
    pub confidence: f32,
    /// Expected quality per tier, Q(t), in tier order.
    #[schema(value_type = std::collections::BTreeMap<String, f32>)]
    pub quality: TierScores,
    pub basis: Basis,
    pub reason: String,
    pub neighbors: Vec<Neighbor>,
}

/// One of the examples the decision was based on.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Neighbor {
    pub id: Option<String>,
    pub text: String,
    pub similarity: f32,
    #[serde(flatten)]
    pub label: Label,
}

/// How the index is built.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterOptions {
    pub policy: Policy,
    pub index: IndexKind,
    pub hnsw: HnswParams,
    /// Where `index` means an HNSW graph, search exactly until [`Router::build_pending_graph`]
    /// has built it (`serve`: ready in the time it takes to load the vectors, not to link
    /// them).
    pub defer_graph: bool,
}

impl RouterOptions {
    /// The policy and index the config describes.
    pub fn from_config(config: &Config) -> Result<Self> {
        Ok(RouterOptions {
            policy: config.policy()?,
            index: config.routing.index,
            hnsw: config.routing.hnsw,
            defer_graph: false,
        })
    }
}

struct State {
    index: Box<dyn VectorIndex>,
    examples: Vec<Example>,
    /// Per-example quality per tier, precomputed from the labels.
    quality: Vec<Vec<Option<f32>>>,
    /// Per-example category group in `baseline`.
    group: Vec<usize>,
    /// Mean quality per category, for `Policy::category_baseline`.
    baseline: CategoryBaseline,
    /// A running hash over every example added or relabeled, in order: with the number of
    /// examples, the example set's version.
    hash: u64,
    /// `index` is exact for now: the HNSW graph the options ask for is still to be built.
    graph_pending: bool,
}

impl State {
    /// The vote's view of index hits: similarity and quality (re-based on the overall mean
    /// when `category_baseline`).
    fn evidence(&self, hits: &[Hit], category_baseline: bool) -> Vec<Evidence> {
        hits.iter()
            .map(|h| Evidence {
                similarity: h.similarity,
                quality: if category_baseline {
                    self.baseline.adjust(self.group[h.id], &self.quality[h.id])
                } else {
                    self.quality[h.id].clone()
                },
            })
            .collect()
    }
}

/// Embedder + index + examples + policy.
pub struct Router {
    embedder: Arc<dyn Embedder>,
    tiers: Tiers,
    options: RouterOptions,
    state: RwLock<State>,
    cache: Option<Mutex<EmbeddingCache>>,
}

impl Router {
    /// A router with no examples yet (every query is out of distribution until some are added).
    pub fn new(embedder: Arc<dyn Embedder>, tiers: Tiers, options: RouterOptions) -> Self {
        Self::with_capacity(embedder, tiers, options, 0)
    }

    /// A router with no examples yet, its index sized for `expected` of them.
    pub fn with_capacity(
        embedder: Arc<dyn Embedder>,
        tiers: Tiers,
        options: RouterOptions,
        expected: usize,
    ) -> Self {
        let graph_pending = options.defer_graph && uses_hnsw(options.index, expected);
        let index: Box<dyn VectorIndex> = if graph_pending {
            Box::new(FlatIndex::new(embedder.dim()))
        } else {
            new_index(options.index, embedder.dim(), expected, options.hnsw)
        };
        Router {
            embedder,
            tiers,
            options,
            state: RwLock::new(State {
                index,
                examples: Vec::new(),
                quality: Vec::new(),
                group: Vec::new(),
                baseline: CategoryBaseline::default(),
                hash: FNV_OFFSET,
                graph_pending,
            }),
            cache: None,
        }
    }

    /// Builds the router the config describes: reads and validates the examples, embeds those
    /// not in the on-disk cache (reporting `(done, total)` to `progress`), indexes them all.
    pub fn from_config(
        config: &Config,
        embedder: Arc<dyn Embedder>,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Router> {
        Self::from_config_with(
            config,
            RouterOptions::from_config(config)?,
            embedder,
            progress,
        )
    }

    /// [`Router::from_config`] with other options (e.g. `defer_graph`).
    pub fn from_config_with(
        config: &Config,
        options: RouterOptions,
        embedder: Arc<dyn Embedder>,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Router> {
        let tiers = config.tiers()?;
        let examples = read_examples(&config.routing.examples, &tiers)?;
        let cache_dir = config.cache_dir().join("embeddings");
        Self::build(
            embedder,
            tiers,
            options,
            examples,
            Some(&cache_dir),
            progress,
        )
    }

    /// A router over the given examples; with `cache_dir`, embeddings are read from and written
    /// to the on-disk cache there.
    pub fn build(
        embedder: Arc<dyn Embedder>,
        tiers: Tiers,
        options: RouterOptions,
        examples: Vec<Example>,
        cache_dir: Option<&std::path::Path>,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Router> {
        let cache = match cache_dir {
            Some(dir) => Some(EmbeddingCache::open(
                dir,
                &embedder.info().sha256,
                embedder.dim(),
            )?),
            None => None,
        };
        let mut router = Self::with_capacity(embedder, tiers, options, examples.len());
        router.cache = cache.map(Mutex::new);
        router.add_with_progress(examples, progress)?;
        Ok(router)
    }

    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    pub fn policy(&self) -> &Policy {
        &self.options.policy
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// Number of indexed examples.
    pub fn len(&self) -> usize {
        self.read().examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `flat` or `hnsw`.
    pub fn index_kind(&self) -> &'static str {
        self.read().index.kind()
    }

    /// Whether the HNSW graph the options ask for is still to be built (searches are exact
    /// meanwhile).
    pub fn graph_pending(&self) -> bool {
        self.read().graph_pending
    }

    /// Builds the HNSW graph `defer_graph` put off, while routing goes on over the exact index
    /// (read locks only, a chunk of vectors at a time, until it has them all), then takes the
    /// write lock to link anything added since and swap it in. Returns false if there was nothing to build.
    pub fn build_pending_graph(&self) -> Result<bool> {
        const CHUNK: usize = 4096;
        let copy = |state: &State, from: usize, to: usize| -> Vec<Vec<f32>> {
            (from..to)
                .map(|i| {
                    state
                        .index
                        .vector(i)
                        .expect("the exact index lends its vectors")
                        .to_vec()
                })
                .collect()
        };
        let mut graph = {
            let state = self.read();
            if !state.graph_pending {
                return Ok(false);
            }
            HnswIndex::new(state.index.dim(), state.index.len(), self.options.hnsw)
        };
        loop {
            let chunk = {
                let state = self.read();
                let from = graph.len();
                copy(&state, from, state.index.len().min(from + CHUNK))
            };
            if chunk.is_empty() {
                break;
            }
            graph.add(&chunk)?;
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if !state.graph_pending {
            return Ok(false);
        }
        let rest = copy(&state, graph.len(), state.index.len());
        graph.add(&rest)?;
        state.index = Box::new(graph);
        state.graph_pending = false;
        Ok(true)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated (inserts happen
        // after all fallible work), so a poisoned lock is still safe to use.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes examples routable (they are not written anywhere: see `corpus::append_examples`).
    pub fn add(&self, examples: Vec<Example>) -> Result<()> {
        self.add_with_progress(examples, &|_, _| {})
    }

    fn add_with_progress(
        &self,
        examples: Vec<Example>,
        progress: &dyn Fn(usize, usize),
    ) -> Result<()> {
        let vectors = self.embed_examples(&examples, progress)?;
        self.add_embedded(examples, &vectors)
    }

    /// Makes examples routable with vectors embedded already (by this model: e.g. loaded from
    /// a store), one per example.
    pub fn add_embedded(&self, examples: Vec<Example>, vectors: &[Vec<f32>]) -> Result<()> {
        if vectors.len() != examples.len() {
            return Err(Error::Index(format!(
                "{} vectors for {} examples",
                vectors.len(),
                examples.len()
            )));
        }
        let quality: Vec<_> = examples
            .iter()
            .map(|e| e.label.quality(&self.tiers))
            .collect();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.index.add(vectors)?;
        for (e, q) in examples.iter().zip(&quality) {
            let group = state.baseline.add(e.category.as_deref(), q);
            state.group.push(group);
        }
        for e in &examples {
            state.hash = fnv1a(
                state.hash,
                &serde_json::to_vec(e).expect("examples serialize"),
            );
        }
        state.examples.extend(examples);
        state.quality.extend(quality);
        Ok(())
    }

    /// The example set's version: `{examples}-{hash}`, where the hash runs over every example
    /// added or relabeled, in order. Two routers built from the same file agree; any addition
    /// or relabeling changes it. Decision records carry it.
    pub fn examples_version(&self) -> String {
        let state = self.read();
        format!("{}-{:016x}", state.examples.len(), state.hash)
    }

    /// Embeddings for examples, from the cache where possible; new ones are cached.
    fn embed_examples(
        &self,
        examples: &[Example],
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        self.embed_cached(&texts, progress)
    }

    /// Embeds texts through the on-disk cache (when the router has one): cached texts are not
    /// embedded again, new ones are added. For example sets and evaluation prompts, not for
    /// live queries (which would grow the cache without bound).
    pub fn embed_cached(
        &self,
        texts: &[&str],
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        let total = texts.len();
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; total];
        if let Some(cache) = &self.cache {
            let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            for (slot, t) in vectors.iter_mut().zip(texts) {
                *slot = cache.get(t).map(<[f32]>::to_vec);
            }
        }
        let missing: Vec<usize> = (0..total).filter(|&i| vectors[i].is_none()).collect();
        let mut done = total - missing.len();
        progress(done, total);
        for chunk in missing.chunks(BUILD_CHUNK) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let embedded = self.embedder.embed(&batch)?;
            if let Some(cache) = &self.cache {
                let items: Vec<(&str, &[f32])> = batch
                    .iter()
                    .copied()
                    .zip(embedded.iter().map(Vec::as_slice))
                    .collect();
                cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(&items)?;
            }
            for (&i, v) in chunk.iter().zip(embedded) {
                vectors[i] = Some(v);
            }
            done += chunk.len();
            progress(done, total);
        }
        Ok(vectors
            .into_iter()
            .map(|v| v.expect("every text embedded"))
            .collect())
    }

    /// The `k` nearest examples of an embedded query as the vote sees them, closest first, from
    /// one search: one list per entry of `category_baseline` (`Policy::category_baseline`:
    /// false = their own quality, true = re-based on the overall mean by category).
    pub fn evidence(
        &self,
        vector: &[f32],
        k: usize,
        category_baseline: &[bool],
    ) -> Result<Vec<Vec<Evidence>>> {
        let state = self.read();
        let hits = state.index.search(vector, k)?;
        Ok(category_baseline
            .iter()
            .map(|&rebase| state.evidence(&hits, rebase))
            .collect())
    }

    /// Routes one query with the configured policy.
    pub fn route(&self, query: &str) -> Result<Decision> {
        self.route_with(query, &self.options.policy)
    }

    /// Routes one query with another policy (e.g. a per-request quality target).
    pub fn route_with(&self, query: &str, policy: &Policy) -> Result<Decision> {
        let query = query_text(query)?;
        let vector = self
            .embedder
            .embed(&[query])?
            .pop()
            .ok_or_else(|| Error::Embed("no vector".into()))?;
        self.decide(&vector, policy)
    }

    /// Routes many queries, embedding them in batches; fails without routing any if one is empty.
    pub fn route_batch(&self, queries: &[&str], policy: &Policy) -> Result<Vec<Decision>> {
        let queries: Vec<&str> = queries
            .iter()
            .map(|q| query_text(q))
            .collect::<Result<_>>()?;
        let vectors = self.embedder.embed(&queries)?;
        vectors.iter().map(|v| self.decide(v, policy)).collect()
    }

    /// The decision for an already embedded query.
    pub fn decide(&self, vector: &[f32], policy: &Policy) -> Result<Decision> {
        let state = self.read();
        let hits = state.index.search(vector, policy.k)?;
        let evidence = state.evidence(&hits, policy.category_baseline);
        let v = vote(&evidence, &self.tiers, policy);
        let tier = &self.tiers[v.tier];
        Ok(Decision {
            id: None,
            tier: tier.name.clone(),
            model: tier.model.clone(),
            confidence: v.confidence,
            quality: v.quality,
            basis: v.basis,
            reason: v.reason,
            neighbors: hits
                .iter()
                .map(|h| {
                    let e = &state.examples[h.id];
                    Neighbor {
                        id: e.id.clone(),
                        text: e.text.clone(),
                        similarity: h.similarity,
                        label: e.label.clone(),
                    }
                })
                .collect(),
        })
    }

    /// Makes an example routable, or, if one with the same id is indexed already, gives that
    /// one the new label (and category and meta): the text, hence the vector, stays.
    pub fn upsert(&self, example: Example) -> Result<()> {
        self.upsert_with(example, None)
    }

    /// [`Router::upsert`] with the example's vector when it is already embedded.
    pub fn upsert_with(&self, example: Example, vector: Option<Vec<f32>>) -> Result<()> {
        {
            let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
            let state = &mut *guard;
            let at = example.id.as_deref().and_then(|id| {
                state
                    .examples
                    .iter()
                    .position(|e| e.id.as_deref() == Some(id))
            });
            if let Some(i) = at {
                let quality = example.label.quality(&self.tiers);
                state.baseline.remove(state.group[i], &state.quality[i]);
                state.group[i] = state.baseline.add(example.category.as_deref(), &quality);
                state.hash = fnv1a(
                    state.hash,
                    &serde_json::to_vec(&example).expect("examples serialize"),
                );
                state.quality[i] = quality;
                state.examples[i] = Example {
                    text: std::mem::take(&mut state.examples[i].text),
                    ..example
                };
                return Ok(());
            }
        }
        match vector {
            Some(v) => self.add_embedded(vec![example], &[v]),
            None => self.add(vec![example]),
        }
    }

    /// Brings the index up to `examples` (the examples file as it is now, e.g. after an
    /// `ingest` by another process): adds what is not indexed, relabels an indexed id whose
    /// label, category or meta changed. An example without id counts as indexed when an
    /// identical one is (each indexed one matches once). What the index cannot follow without a
    /// restart is counted: a changed text under a known id (its vector stays), and indexed
    /// examples the file no longer has.
    pub fn sync(&self, examples: Vec<Example>) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let mut fresh = Vec::new();
        {
            let state = self.read();
            let by_id: HashMap<&str, &Example> = state
                .examples
                .iter()
                .filter_map(|e| e.id.as_deref().map(|id| (id, e)))
                .collect();
            let mut unnamed: HashMap<String, usize> = HashMap::new();
            for e in state.examples.iter().filter(|e| e.id.is_none()) {
                *unnamed
                    .entry(serde_json::to_string(e).expect("examples serialize"))
                    .or_default() += 1;
            }
            let mut seen_ids = 0;
            for e in examples {
                match e.id.as_deref().and_then(|id| by_id.get(id)) {
                    Some(old) => {
                        seen_ids += 1;
                        if old.text != e.text {
                            report.text_changed += 1;
                        } else if **old != e {
                            report.relabelled += 1;
                            fresh.push((true, e));
                        }
                    }
                    None if e.id.is_none() => {
                        let key = serde_json::to_string(&e).expect("examples serialize");
                        match unnamed.get_mut(&key) {
                            Some(n) if *n > 0 => *n -= 1,
                            _ => {
                                report.added += 1;
                                fresh.push((false, e));
                            }
                        }
                    }
                    None => {
                        report.added += 1;
                        fresh.push((false, e));
                    }
                }
            }
            report.missing_from_file = by_id.len() - seen_ids + unnamed.values().sum::<usize>();
        }
        let (relabel, add): (Vec<_>, Vec<_>) = fresh.into_iter().partition(|(r, _)| *r);
        for (_, e) in relabel {
            self.upsert(e)?;
        }
        self.add(add.into_iter().map(|(_, e)| e).collect())?;
        Ok(report)
    }

    /// The indexed example with this id.
    pub fn example(&self, id: &str) -> Option<Example> {
        let state = self.read();
        state
            .examples
            .iter()
            .find(|e| e.id.as_deref() == Some(id))
            .cloned()
    }

    /// Ids of the indexed examples, e.g. to refuse a live addition that reuses one.
    pub fn ids(&self) -> std::collections::HashSet<String> {
        crate::corpus::ids(&self.read().examples)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a over `bytes`, continuing from `hash`.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Characters that carry no text: whitespace, control characters (NUL included), zero-width
/// characters, the byte-order mark and the soft hyphen.
fn invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}' | '\u{180E}'
        )
}

/// The one rule for a query's text at every entry point (CLI, `/v1/route`, chats, examples'
/// replay): trimmed of invisible characters at both ends; nothing left is
/// [`Error::EmptyQuery`].
pub fn query_text(query: &str) -> Result<&str> {
    let q = query.trim_matches(invisible);
    if q.is_empty() {
        Err(Error::EmptyQuery)
    } else {
        Ok(q)
    }
}

/// A deterministic stand-in embedding for logic tests: a bag of hashed words in 64
/// dimensions, L2-normalised.
#[cfg(test)]
pub(crate) fn hashed_words_info() -> crate::embed::ModelInfo {
    crate::embed::ModelInfo {
        name: "words".into(),
        source: crate::embed::SourceKind::LocalDir,
        dir: ".".into(),
        sha256: "0".repeat(64),
        dim: 64,
        pooling: "mean".into(),
        max_length: 256,
        device: "cpu".into(),
    }
}

/// An empty router for logic tests: tiers small, medium, large, fallback large, exact index.
#[cfg(test)]
pub(crate) fn empty_test_router(embedder: Arc<dyn Embedder>) -> Router {
    let options = RouterOptions {
        policy: Policy {
            fallback_tier: 2,
            ..Policy::default()
        },
        index: IndexKind::Flat,
        hnsw: HnswParams::default(),
        defer_graph: false,
    };
    Router::new(
        embedder,
        crate::tier::test_tiers(&["small", "medium", "large"]),
        options,
    )
}

/// The vector of [`hashed_words_info`]'s stand-in model for one text.
#[cfg(test)]
pub(crate) fn hashed_words(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 64];
    for w in text.split_whitespace() {
        let h = w
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        v[(h % 64) as usize] += 1.0;
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
    v.iter().map(|x| x / n).collect()
}

/// A deterministic stand-in embedder for logic tests: [`hashed_words`] vectors.
/// (Real-model tests live in the integration binary.)
#[cfg(test)]
pub(crate) struct HashedWords(crate::embed::ModelInfo);

#[cfg(test)]
impl HashedWords {
    pub(crate) fn new() -> Self {
        HashedWords(hashed_words_info())
    }
}

#[cfg(test)]
impl Embedder for HashedWords {
    fn info(&self) -> &crate::embed::ModelInfo {
        &self.0
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| hashed_words(t)).collect())
    }
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(text.split_whitespace().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(id: &str, text: &str, tier: &str) -> Example {
        Example {
            id: Some(id.into()),
            text: text.into(),
            label: Label::Tier { tier: tier.into() },
            category: None,
            meta: None,
        }
    }

    fn router() -> Router {
        empty_test_router(Arc::new(HashedWords::new()))
    }

    #[test]
    fn routes_to_the_label_of_the_matching_example() {
        let r = router();
        assert_eq!(
            r.route("hello there").unwrap().basis,
            Basis::OutOfDistribution
        );
        r.add(vec![
            example("g", "hello there friend", "small"),
            example("p", "prove the riemann hypothesis rigorously", "large"),
        ])
        .unwrap();
        let d = r.route("prove the riemann hypothesis").unwrap();
        assert_eq!(
            (d.tier.as_str(), d.model.as_str()),
            ("large", "model-large")
        );
        assert_eq!(d.neighbors[0].id.as_deref(), Some("p"));
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["neighbors"][0]["tier"], "large");
        assert!(json["quality"]["small"].is_number());
        let batch = r
            .route_batch(&["hello there friend", "prove it rigorously"], r.policy())
            .unwrap();
        assert_eq!(batch[0].tier, "small");
    }

    #[test]
    fn category_baseline_rebases_neighbour_quality() {
        let r = router();
        let outcomes = |id: &str, text: &str, category: &str, small: f32| Example {
            id: Some(id.into()),
            text: text.into(),
            label: Label::Outcomes {
                outcomes: [("small".to_string(), small), ("large".to_string(), 1.0)].into(),
            },
            category: Some(category.into()),
            meta: None,
        };
        // Small's mean: 0.5 in "hard", 1 in "easy", 2/3 overall.
        r.add(vec![
            outcomes("h1", "integrate this tricky function", "hard", 0.0),
            outcomes("h2", "integrate this easy function", "hard", 1.0),
            outcomes("e1", "say hello to my friend", "easy", 1.0),
        ])
        .unwrap();
        let v = hashed_words("integrate this tricky function");
        let [plain, rebased] =
            <[_; 2]>::try_from(r.evidence(&v, 1, &[false, true]).unwrap()).unwrap();
        assert_eq!(plain[0].quality, [Some(0.0), None, Some(1.0)]);
        let q = rebased[0].quality[0].unwrap();
        assert!((q - 1.0 / 6.0).abs() < 1e-6, "0 - 0.5 + 2/3, got {q}");
        assert_eq!(rebased[0].quality[2], Some(1.0));
        let policy = Policy {
            k: 1,
            category_baseline: true,
            ..r.policy().clone()
        };
        let d = r
            .route_with("integrate this tricky function", &policy)
            .unwrap();
        assert!((d.quality.get("small").unwrap() - 1.0 / 6.0).abs() < 1e-6);
        assert!(d.reason.contains("category"), "{}", d.reason);
    }

    #[test]
    fn a_deferred_graph_is_built_while_examples_arrive_and_loses_none() {
        let options = RouterOptions {
            index: IndexKind::Hnsw,
            defer_graph: true,
            ..empty_test_router(Arc::new(HashedWords::new()))
                .options
                .clone()
        };
        let text = |i: usize| format!("w{i} x{} y{} z{}", i % 7, i % 11, i % 13);
        let batch = |from: usize, to: usize| -> Vec<Example> {
            (from..to)
                .map(|i| example(&format!("e{i}"), &text(i), "small"))
                .collect()
        };
        let r = Arc::new(Router::with_capacity(
            Arc::new(HashedWords::new()),
            crate::tier::test_tiers(&["small", "medium", "large"]),
            options,
            5000,
        ));
        r.add(batch(0, 5000)).unwrap();
        assert!(r.graph_pending());
        assert_eq!(r.index_kind(), "flat");
        assert_eq!(r.route(&text(7)).unwrap().neighbors[0].similarity, 1.0);
        let builder = {
            let r = r.clone();
            std::thread::spawn(move || r.build_pending_graph().unwrap())
        };
        for from in (5000..5400).step_by(40) {
            r.add(batch(from, from + 40)).unwrap();
        }
        assert!(builder.join().unwrap());
        assert!(!r.build_pending_graph().unwrap(), "built once");
        assert_eq!((r.index_kind(), r.graph_pending()), ("hnsw", false));
        let state = r.read();
        assert_eq!(state.index.len(), 5400);
        for i in (0..5400).step_by(97).chain(5360..5400) {
            let hits = state.index.search(&hashed_words(&text(i)), 10).unwrap();
            assert!(hits.iter().any(|h| h.id == i), "example {i}: {hits:?}");
        }
    }

    #[test]
    fn empty_queries_are_refused() {
        let r = router();
        assert!(matches!(r.route("  \n\t"), Err(Error::EmptyQuery)));
        for blank in ["\0\0", "\u{200B}\u{FEFF}", "\u{1}\u{7f} \u{2060}\u{AD}"] {
            assert!(
                matches!(r.route(blank), Err(Error::EmptyQuery)),
                "{blank:?}"
            );
        }
        assert_eq!(
            query_text("\u{FEFF} hi\u{200B}there \0").unwrap(),
            "hi\u{200B}there"
        );
        assert!(matches!(
            r.route_batch(&["ok", ""], r.policy()),
            Err(Error::EmptyQuery)
        ));
    }
}
