//! One module per scenario, in the order they run.

pub mod console;
pub mod drain;
pub mod drain_limited;
pub mod drain_ordered;
pub mod footprint;
pub mod keeping_up;
pub mod latency;
pub mod limits;
pub mod trigger_cost;
