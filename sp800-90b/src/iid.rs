//! The IID track (§5): permutation tests (§5.1), chi-square tests and the LRS test (§5.2).
