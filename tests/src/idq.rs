//! Calls IDQ's `/dev/qrandom` ioctls on a file, as libQuantis does, for tests of the FUSE device
//! file. The only unsafe code of the test helpers lives here.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Calls a "read an unsigned int" ioctl (`_IOR('q', nr, unsigned int)`) and returns the value.
pub fn ioctl_u32(file: &File, cmd: u32) -> io::Result<u32> {
    let mut v: libc::c_uint = 0;
    // SAFETY: `cmd` is a read ioctl of at most 4 bytes by contract of this function; the kernel
    // writes at most `_IOC_SIZE(cmd)` bytes into `v`, a live local of that size, and the fd is
    // valid for the duration of the call because `file` is borrowed.
    let rc = unsafe {
        libc::ioctl(file.as_raw_fd(), libc::Ioctl::from(cmd), &mut v as *mut libc::c_uint)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Calls an ioctl whose argument is a buffer (`_IOR` of a `char[N]`, or `_IOW` of an int):
/// the kernel reads from or writes into `buf`, of at least `_IOC_SIZE(cmd)` bytes.
pub fn ioctl_buf(file: &File, cmd: u32, buf: &mut [u8]) -> io::Result<()> {
    let size = ((cmd >> 16) & 0x3fff) as usize;
    if buf.len() < size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "buffer smaller than the ioctl's size",
        ));
    }
    // SAFETY: `buf` is a live, exclusively borrowed buffer of at least the size encoded in `cmd`
    // (checked above), so the kernel's copy to or from it stays in bounds.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::Ioctl::from(cmd), buf.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Calls an argument-less ioctl (`_IO`), such as IDQ's RESET_BOARD.
pub fn ioctl_none(file: &File, cmd: u32) -> io::Result<()> {
    if (cmd >> 16) & 0x3fff != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "ioctl takes an argument"));
    }
    // SAFETY: the command encodes a zero-sized argument (checked above), so the kernel touches no
    // memory through the (null) argument.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::Ioctl::from(cmd), 0usize) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
