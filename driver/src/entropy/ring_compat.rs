//! Temporary stand-ins for `crate::ring::{Reason, HealthParams}` (RING-API.md) until the ring
//! module lands on main; removed at the merge.

use std::fmt;

/// Why the ring is not OK (wire codes per RING-API.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    None = 0,
    StartupTest = 1,
    RepetitionCount = 2,
    AdaptiveProportion = 3,
    ModuleFailure = 4,
    ChipError = 5,
    DmaError = 6,
    DeviceGone = 7,
    RecoveryExhausted = 8,
    Shutdown = 9,
    Other = 255,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Health-test cutoffs in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HealthParams {
    pub min_entropy_milli: u32,
    pub rct_cutoff: u32,
    pub apt_window: u32,
    pub apt_cutoff: u32,
}
