//! How an instance ended, as the report says it: the one word shared by the JSON
//! report, the foreach counters and JUnit (a leaf, so they import it, not each other).

use schemars::JsonSchema;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndState {
    Succeeded,
    Failed,
    Killed,
    TimedOut,
    Stopped,
    Skipped,
    CouldNotStart,
}
