//! Feedback: a logged decision's outcome, turned into a labeled example.
//!
//! Feedback names a decision by id and says how it went, in one of three ways:
//! `{"id", "outcomes": {tier: score}}` (scores per tier), `{"id", "tier": "medium"}` (the
//! cheapest tier that would have done: 0 below it, 1 from it up) or `{"id", "score": 0.8}` (a
//! score for the tier that served it). It becomes the outcome example `fb-<decision id>` with
//! the routed text, so the next similar query has it among its neighbours. Feedback on the
//! same decision again merges in the other tiers' scores; a different score for a tier already
//! scored is a [`Conflict`], never a silent overwrite.
//!
//! `POST /v1/feedback` and `model-router feedback` share this module and
//! `corpus::update_examples`.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::corpus::{Example, ExampleSet, Label};
use crate::decision_log::DecisionRecord;
use crate::error::{Error, Result};
use crate::tier::Tiers;

/// One piece of feedback, as sent (`POST /v1/feedback` body, or a line of a feedback file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    /// The decision's id (the request's `x-request-id`).
    pub id: String,
    /// A score per tier: a number in [0, 1] or a boolean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<BTreeMap<String, serde_json::Value>>,
    /// The cheapest tier that would have done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// A score for the tier that served it: a number in [0, 1] or a boolean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<serde_json::Value>,
}

/// Scores that disagree with earlier feedback on the same decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// (tier, earlier score, new score)
    pub tiers: Vec<(String, f32, f32)>,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .tiers
            .iter()
            .map(|(t, old, new)| format!("`{t}` was {old} and is now {new}"))
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

/// What feedback did to the examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new `fb-` example.
    Added,
    /// Scores for more tiers merged into the decision's `fb-` example.
    Merged,
    /// The same scores again: nothing changed.
    Unchanged,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Added => "added",
            Applied::Merged => "merged",
            Applied::Unchanged => "unchanged",
        }
    }
}

/// The id of the example feedback on decision `id` becomes.
pub fn example_id(decision: &str) -> String {
    format!("fb-{decision}")
}

impl Feedback {
    /// Checks the shape and turns the feedback into scores per tier: exactly one of `outcomes`,
    /// `tier` or `score`; known tiers; scores in [0, 1] or booleans. `served` is the tier the
    /// decision chose (what `score` scores).
    pub fn outcomes(&self, tiers: &Tiers, served: &str) -> Result<BTreeMap<String, f32>> {
        let bad = |m: String| Err(Error::Feedback(m));
        if self.id.trim().is_empty() {
            return bad("`id` is empty: give the decision's id (its x-request-id)".into());
        }
        let given = [
            self.outcomes.is_some(),
            self.tier.is_some(),
            self.score.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() != 1 {
            return bad(
                "give exactly one of `outcomes` ({tier: score}), `tier` (the cheapest tier \
                 that would have done) or `score` (for the tier that served it)"
                    .into(),
            );
        }
        let score = |tier: &str, v: &serde_json::Value| -> Result<f32> {
            let s = match v {
                serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
                serde_json::Value::Number(n) => n
                    .as_f64()
                    .filter(|x| (0.0..=1.0).contains(x))
                    .map(|x| x as f32),
                _ => None,
            };
            s.ok_or_else(|| {
                Error::Feedback(format!(
                    "the score for `{tier}` must be a number in [0, 1] or a boolean, got {v}"
                ))
            })
        };
        if let Some(outcomes) = &self.outcomes {
            if outcomes.is_empty() {
                return bad("`outcomes` is empty".into());
            }
            return outcomes
                .iter()
                .map(|(t, v)| {
                    tiers.require(t)?;
                    Ok((t.clone(), score(t, v)?))
                })
                .collect();
        }
        if let Some(tier) = &self.tier {
            let at = tiers.require(tier)?;
            return Ok(tiers
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), if i >= at { 1.0 } else { 0.0 }))
                .collect());
        }
        let value = self.score.as_ref().expect("one of the three is given");
        tiers.require(served)?;
        Ok([(served.to_string(), score(served, value)?)].into())
    }
}

/// The example for feedback on `decision`: its routed text, the scores, and where it came from.
pub fn example(decision: &DecisionRecord, outcomes: BTreeMap<String, f32>) -> Example {
    Example {
        id: Some(example_id(&decision.id)),
        text: decision.query.clone(),
        label: Label::Outcomes { outcomes },
        category: Some("feedback".into()),
        meta: Some(serde_json::json!({
            "decision": decision.id,
            "time": decision.time,
            "endpoint": decision.endpoint,
            "routed_tier": decision.tier,
        })),
    }
}

/// Merges new scores into an earlier feedback example. `Ok(None)`: nothing new.
pub fn merge(
    earlier: &Example,
    outcomes: &BTreeMap<String, f32>,
) -> std::result::Result<Option<Example>, Conflict> {
    let old = match &earlier.label {
        Label::Outcomes { outcomes } => outcomes.clone(),
        Label::Tier { .. } => BTreeMap::new(),
    };
    let conflicts: Vec<(String, f32, f32)> = outcomes
        .iter()
        .filter_map(|(t, &new)| {
            old.get(t)
                .filter(|&&was| (was - new).abs() > 1e-6)
                .map(|&was| (t.clone(), was, new))
        })
        .collect();
    if !conflicts.is_empty() {
        return Err(Conflict { tiers: conflicts });
    }
    if outcomes.keys().all(|t| old.contains_key(t)) {
        return Ok(None);
    }
    let mut merged = old;
    merged.extend(outcomes.iter().map(|(t, s)| (t.clone(), *s)));
    Ok(Some(Example {
        label: Label::Outcomes { outcomes: merged },
        ..earlier.clone()
    }))
}

/// Applies feedback on `decision` to an examples file being updated: adds its `fb-` example,
/// or merges the scores into the one already there. A conflicting score is an
/// [`Error::FeedbackConflict`] and changes nothing.
pub fn apply(
    set: &mut ExampleSet,
    decision: &DecisionRecord,
    outcomes: BTreeMap<String, f32>,
) -> Result<(Example, Applied)> {
    let id = example_id(&decision.id);
    let Some(earlier) = set.get(&id) else {
        let new = example(decision, outcomes);
        let mut added = set.add(&[new], "feedback", &HashSet::new())?;
        return Ok((added.remove(0), Applied::Added));
    };
    match merge(earlier, &outcomes) {
        Err(conflict) => Err(Error::FeedbackConflict {
            decision: decision.id.clone(),
            details: conflict.to_string(),
        }),
        Ok(None) => Ok((earlier.clone(), Applied::Unchanged)),
        Ok(Some(merged)) => {
            set.put(merged.clone(), "feedback")?;
            Ok((merged, Applied::Merged))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::test_tiers;

    fn feedback(json: serde_json::Value) -> Feedback {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn three_forms_become_scores_per_tier() {
        let t = test_tiers(&["small", "medium", "large"]);
        let o = feedback(serde_json::json!({"id": "d", "outcomes": {"small": false, "large": 1}}))
            .outcomes(&t, "small")
            .unwrap();
        assert_eq!(o, [("small".into(), 0.0), ("large".into(), 1.0)].into());
        let o = feedback(serde_json::json!({"id": "d", "tier": "medium"}))
            .outcomes(&t, "small")
            .unwrap();
        assert_eq!(
            o,
            [
                ("small".into(), 0.0),
                ("medium".into(), 1.0),
                ("large".into(), 1.0)
            ]
            .into()
        );
        let o = feedback(serde_json::json!({"id": "d", "score": 0.8}))
            .outcomes(&t, "medium")
            .unwrap();
        assert_eq!(o, [("medium".into(), 0.8)].into());
    }

    #[test]
    fn bad_feedback_says_what_is_wrong() {
        let t = test_tiers(&["small", "large"]);
        let err = |j: serde_json::Value| feedback(j).outcomes(&t, "small").unwrap_err().to_string();
        assert!(err(serde_json::json!({"id": "d"})).contains("exactly one"));
        assert!(
            err(serde_json::json!({"id": "d", "tier": "small", "score": 1}))
                .contains("exactly one")
        );
        assert!(err(serde_json::json!({"id": "d", "score": 1.5})).contains("[0, 1]"));
        assert!(err(serde_json::json!({"id": "d", "tier": "huge"})).contains("unknown tier"));
        assert!(err(serde_json::json!({"id": "d", "outcomes": {"huge": 1}})).contains("huge"));
        assert!(err(serde_json::json!({"id": "d", "outcomes": {}})).contains("empty"));
        assert!(err(serde_json::json!({"id": " ", "score": 1})).contains("`id`"));
        assert!(
            serde_json::from_value::<Feedback>(serde_json::json!({"id": "d", "scor": 1})).is_err()
        );
    }

    #[test]
    fn merging_adds_tiers_and_refuses_conflicts() {
        let earlier = Example {
            id: Some("fb-d".into()),
            text: "q".into(),
            label: Label::Outcomes {
                outcomes: [("small".into(), 0.0)].into(),
            },
            category: Some("feedback".into()),
            meta: None,
        };
        let merged = merge(&earlier, &[("large".into(), 1.0)].into())
            .unwrap()
            .unwrap();
        assert_eq!(
            merged.label,
            Label::Outcomes {
                outcomes: [("small".into(), 0.0), ("large".into(), 1.0)].into()
            }
        );
        assert_eq!(merge(&merged, &[("small".into(), 0.0)].into()), Ok(None));
        let conflict = merge(&merged, &[("small".into(), 1.0)].into()).unwrap_err();
        assert_eq!(conflict.tiers, vec![("small".into(), 0.0, 1.0)]);
        assert!(conflict.to_string().contains("`small` was 0 and is now 1"));
    }
}
