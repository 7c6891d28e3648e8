//! The two kernel interfaces the feeder uses, and the only unsafe code in the crate:
//! `RNDADDENTROPY` on /dev/random (mix bytes into the input pool and credit them; needs
//! CAP_SYS_ADMIN) and `getrandom(GRND_NONBLOCK)` (is the kernel's CRNG ready?).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `RNDADDENTROPY = _IOW('R', 0x03, int[2])` (include/uapi/linux/random.h): direction write (1),
/// size 8 (the two ints `entropy_count`, `buf_size` before the flexible `buf`), type 'R', number 3.
pub const RNDADDENTROPY: u64 = (1 << 30) | (8 << 16) | ((b'R' as u64) << 8) | 0x03;

/// The largest buffer one ioctl carries here (the kernel takes any size; this bounds the
/// feeder's own allocation and is far above what it sends).
pub const MAX_ADD: usize = 4096;

/// Mixes `bytes` into the kernel's input pool through `random` (/dev/random, opened for writing)
/// and credits `bits` bits of entropy (`struct rand_pool_info { int entropy_count; int buf_size;
/// __u32 buf[]; }`). The kernel refuses without CAP_SYS_ADMIN (EPERM) and a negative count
/// (EINVAL); it caps the credit at what the pool can hold.
pub fn add_entropy(random: &File, bytes: &[u8], bits: u32) -> io::Result<()> {
    if bytes.len() > MAX_ADD {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "more than MAX_ADD bytes"));
    }
    let count = i32::try_from(bits)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entropy count above i32"))?;
    // u32 words keep the struct's alignment; two header ints, then the bytes.
    let mut words = vec![0u32; 2 + bytes.len().div_ceil(4)];
    words[0] = count as u32;
    words[1] = bytes.len() as u32;
    for (i, b) in bytes.iter().enumerate() {
        let w = &mut words[2 + i / 4];
        *w |= u32::from(*b) << (8 * (i % 4)) as u32;
    }
    // The bytes in memory order on a little-endian machine; on a big-endian one the same bytes
    // land in another order within each word, which does not matter to the pool.
    // SAFETY: `words` is a live, 4-aligned buffer of 8 + buf_size (rounded up) bytes laid out as
    // `struct rand_pool_info`; the kernel reads exactly 8 + words[1] bytes from it and writes
    // nothing. The file descriptor is open for the duration of the call.
    let rc = unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY as _, words.as_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the kernel's CRNG is initialised: `getrandom(buf, 1, GRND_NONBLOCK)` succeeds, where
/// before initialisation it fails with EAGAIN (Linux ≥ 3.17).
pub fn crng_ready() -> io::Result<bool> {
    let mut b = [0u8; 1];
    // SAFETY: the kernel writes at most 1 byte into `b`, a live local buffer of 1 byte.
    let rc =
        unsafe { libc::syscall(libc::SYS_getrandom, b.as_mut_ptr(), 1usize, libc::GRND_NONBLOCK) };
    if rc >= 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EAGAIN) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_number_is_the_kernels() {
        // include/uapi/linux/random.h: #define RNDADDENTROPY _IOW( 'R', 0x03, int [2] ).
        assert_eq!(RNDADDENTROPY, 0x4008_5203);
    }

    #[test]
    fn without_cap_sys_admin_or_on_a_plain_file_the_kernel_refuses() {
        // A regular file has no such ioctl: ENOTTY, whoever runs the test.
        let f = tempfile::tempfile().expect("tempfile");
        let e = add_entropy(&f, &[1, 2, 3], 24).expect_err("not a random device");
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY), "{e}");
        assert!(add_entropy(&f, &[0; MAX_ADD + 1], 0).is_err());
    }

    #[test]
    fn the_crng_of_a_running_test_host_is_ready() {
        assert!(crng_ready().expect("getrandom"));
    }
}
