//! Model tiers, ordered cheapest first. A tier is a name the router decides on, the concrete
//! model it stands for, the upstream that serves it, and its prices.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One tier of the configured ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub name: String,
    pub model: String,
    /// Name of an `[upstreams.X]` entry; a tier without one can route but not forward.
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub input_price_per_mtok: f64,
    #[serde(default)]
    pub output_price_per_mtok: f64,
    /// The same tier on upstreams of other kinds: a request of a protocol the main upstream
    /// does not speak goes to the first alternate whose upstream speaks it, with its model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternates: Vec<Alternate>,
}

/// Another model standing for a tier on another upstream (`[[tiers.alternates]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alternate {
    pub model: String,
    pub upstream: String,
}

/// The tiers, cheapest first. Indices into this list are the tier ids used by the vote.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiers(Vec<Tier>);

impl Tiers {
    /// Checks the ladder is usable: at least one tier, unique non-empty names, sane prices.
    /// The order given is the cost order the vote relies on (cheapest first).
    pub fn new(tiers: Vec<Tier>) -> Result<Self> {
        if tiers.is_empty() {
            return Err(Error::Config(
                "at least one [[tiers]] entry is required".into(),
            ));
        }
        for (i, t) in tiers.iter().enumerate() {
            if t.name.trim().is_empty() {
                return Err(Error::Config(format!("tier #{} has an empty name", i + 1)));
            }
            if t.model.trim().is_empty() {
                return Err(Error::Config(format!(
                    "tier `{}` has an empty model",
                    t.name
                )));
            }
            if tiers[..i].iter().any(|u| u.name == t.name) {
                return Err(Error::Config(format!("tier `{}` is defined twice", t.name)));
            }
            let prices = [t.input_price_per_mtok, t.output_price_per_mtok];
            if prices.iter().any(|p| !p.is_finite() || *p < 0.0) {
                return Err(Error::Config(format!(
                    "tier `{}` has a negative or non-finite price",
                    t.name
                )));
            }
        }
        Ok(Tiers(tiers))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Tier> {
        self.0.iter()
    }

    pub fn get(&self, index: usize) -> Option<&Tier> {
        self.0.get(index)
    }

    /// Position of a tier by name (cheapest = 0).
    pub fn position(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|t| t.name == name)
    }

    /// Like [`Tiers::position`], but an unknown name is an error listing the known ones.
    pub fn require(&self, name: &str) -> Result<usize> {
        self.position(name).ok_or_else(|| Error::UnknownTier {
            name: name.to_string(),
            known: self.names().join(", "),
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|t| t.name.as_str()).collect()
    }
}

impl std::ops::Index<usize> for Tiers {
    type Output = Tier;
    fn index(&self, index: usize) -> &Tier {
        &self.0[index]
    }
}

#[cfg(test)]
pub(crate) fn test_tiers(names: &[&str]) -> Tiers {
    Tiers::new(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Tier {
                name: n.to_string(),
                model: format!("model-{n}"),
                upstream: None,
                input_price_per_mtok: i as f64,
                output_price_per_mtok: i as f64,
                alternates: Vec::new(),
            })
            .collect(),
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicates_and_empty() {
        assert!(Tiers::new(vec![]).is_err());
        let t = test_tiers(&["a"]);
        let dup = vec![t[0].clone(), t[0].clone()];
        assert!(Tiers::new(dup).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn unknown_tier_lists_known() {
        let t = test_tiers(&["small", "large"]);
        assert_eq!(t.require("large").unwrap(), 1);
        let e = t.require("huge").unwrap_err().to_string();
        assert!(e.contains("huge") && e.contains("small, large"), "{e}");
    }
}
