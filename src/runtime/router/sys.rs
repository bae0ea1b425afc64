//! Thin, non-panicking wrappers over the Linux syscalls the router's hot loop needs.
//!
//! The router moves bytes between pipes with non-blocking `read`/`writev` and waits in
//! `poll`; it measures what a reader has not consumed yet with `FIONREAD` on the write
//! end of the reader's pipe (Linux answers it on either end, and still answers after the
//! reader closed its end), and enlarges pipes with `F_SETPIPE_SZ` to cut wake-ups. These
//! are called once per block, so they go straight to libc instead of through a heavier
//! abstraction.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Put `fd` in non-blocking mode (only our open file description is affected: the child
/// holds the other end of the pipe, a different description).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments on a descriptor the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bytes sitting in the pipe behind `fd` (either end). 0 when it is not a pipe.
pub fn unread_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid and aligned.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) };
    if r < 0 { 0 } else { n.max(0) as usize }
}

/// A new read-only, non-blocking descriptor on the pipe behind `fd` (opened through
/// `/proc/self/fd`, which opens the pipe itself, not a copy of `fd`). None if that
/// fails (no /proc).
pub fn reopen_for_reading(fd: RawFd) -> Option<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).ok()?;
    // SAFETY: a valid NUL-terminated path; the result is a fresh descriptor or -1.
    let r = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a fresh descriptor owned by nobody else.
    (r >= 0).then(|| unsafe { OwnedFd::from_raw_fd(r) })
}

/// Try to make the pipe behind `fd` at least `want` bytes; returns its capacity.
/// Failure (not a pipe, or the per-user pipe budget is spent) keeps the current size.
pub fn grow_pipe(fd: RawFd, want: usize) -> usize {
    // SAFETY: fcntl with integer arguments.
    let cur = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    if cur < 0 {
        return 64 * 1024;
    }
    if (cur as usize) < want {
        // SAFETY: as above; an error leaves the pipe unchanged.
        let r = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, want as libc::c_int) };
        if r > 0 {
            return r as usize;
        }
    }
    cur as usize
}

/// Make the pipe behind `fd` `want` bytes (rounded up by the kernel to a power of two
/// pages), larger or smaller; returns its capacity. If that fails (the pipe holds more,
/// or the per-user pipe budget is spent) it keeps its current size.
pub fn set_pipe_size(fd: RawFd, want: usize) -> usize {
    // SAFETY: fcntl with integer arguments; an error leaves the pipe unchanged.
    let r = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, want as libc::c_int) };
    if r > 0 {
        return r as usize;
    }
    // SAFETY: as above.
    let cur = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    if cur > 0 { cur as usize } else { 64 * 1024 }
}

/// Read at most `max` bytes appended to `buf` (grown as needed).
pub fn read_into(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = max.min(spare.len());
    // SAFETY: the kernel writes at most `want` bytes into the vector's spare capacity,
    // which is allocated and owned by `buf`.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: `n <= want` bytes were initialised by read(2).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Read into a plain buffer (used to discard a stream).
pub fn read_some(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable slice of buf.len() bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Gathered write; returns bytes written (may be partial on a non-blocking pipe).
pub fn writev(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: std guarantees IoSlice is ABI-compatible with `struct iovec` on Unix; the
    // slices outlive the call.
    let n = unsafe { libc::writev(fd, bufs.as_ptr().cast(), bufs.len() as libc::c_int) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// poll(2); EINTR counts as "nothing happened".
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: fds is a valid mutable slice of pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// An eventfd used to wake the router's poll when the supervisor sends a command.
pub struct Waker(OwnedFd);

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Waker(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64; errors (counter full) are harmless.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; EAGAIN when nothing was signalled.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// prun ignores SIGPIPE so that a reader that went away shows up as EPIPE on write
/// instead of killing the whole runner. Only changes the default disposition.
pub fn ignore_sigpipe() {
    // SAFETY: querying and setting a signal disposition with a zeroed sigaction.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_DFL
        {
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = libc::SIG_IGN;
            libc::sigaction(libc::SIGPIPE, &new, std::ptr::null_mut());
        }
    }
}

/// A new pipe (non-blocking, close-on-exec): `(read end, write end)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors into a valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// tee(2): duplicate up to `len` bytes from the head of pipe `from` into pipe `to`
/// without consuming them (page references, no copy). 0: `from` is empty and has no
/// writer left (end of stream).
pub fn tee(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: tee takes two descriptors and integers; no memory is passed.
    let n = unsafe { libc::tee(from, to, len, libc::SPLICE_F_NONBLOCK) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// splice(2) from pipe `from` to `to` (a pipe or /dev/null), at most `len` bytes: moves
/// page references from one pipe to the other instead of copying the bytes.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;
    // SAFETY: null offsets (pipes have none); no memory is passed.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
