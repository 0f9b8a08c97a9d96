//! model-router: send each LLM request to the cheapest model tier that answers it well.
pub mod corpus;
pub mod error;
pub mod index;
pub mod tier;
pub mod vote;
pub mod embed;
