//! Entropy pipeline: SP 800-90B start-up and continuous health tests on raw samples, then
//! optional conditioning (von Neumann, IDQ-style matrix, Toeplitz).
