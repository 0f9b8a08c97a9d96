//! model-router: send each LLM request to the cheapest model tier that answers it well.
pub mod config;
pub mod corpus;
pub mod embed;
pub mod error;
pub mod index;
pub mod router;
pub mod tier;
pub mod vote;
