//! [`Prices`]: what a model's tokens cost.

use std::collections::HashMap;

/// A model's price per million input and output tokens (in any one currency).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Price {
    /// Per million prompt tokens.
    pub input_per_million: f64,
    /// Per million completion tokens.
    pub output_per_million: f64,
}

impl Price {
    /// The cost of these counts.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input_per_million
            + completion_tokens as f64 * self.output_per_million)
            / 1_000_000.0
    }
}

/// Prices by model name (the name the client asked for; the routed name is tried next).
///
/// ```
/// use chatgate::usage::{Price, Prices};
/// let prices = Prices::new().with("qwen", Price { input_per_million: 0.15, output_per_million: 0.60 });
/// assert_eq!(prices.cost("qwen", 1_000_000, 500_000), Some(0.45));
/// assert_eq!(prices.cost("other", 1, 1), None);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Prices {
    by_model: HashMap<String, Price>,
}

impl Prices {
    /// No prices.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a model's price.
    pub fn with(mut self, model: impl Into<String>, price: Price) -> Self {
        self.by_model.insert(model.into(), price);
        self
    }

    /// The price of `model`.
    pub fn get(&self, model: &str) -> Option<&Price> {
        self.by_model.get(model)
    }

    /// The cost of the counts for `model`, when it has a price.
    pub fn cost(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) -> Option<f64> {
        self.get(model)
            .map(|p| p.cost(prompt_tokens, completion_tokens))
    }

    /// Whether no model has a price.
    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }
}
