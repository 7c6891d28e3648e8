//! Bounds-checked, aligned, volatile 32-bit access to a mapped BAR. (Filled in by the VFIO/UIO work.)
