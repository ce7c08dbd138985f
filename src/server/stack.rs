//! The one module of the crate with `unsafe` code: giving an idle client
//! thread's stack pages back to the kernel. No safe wrapper offers this:
//! finding the thread's own stack takes `pthread_getattr_np`, and
//! `madvise(MADV_DONTNEED)` on memory the program may touch again is unsafe
//! by nature. The safety argument is written at the call.
#![allow(unsafe_code)]

/// Gives the kernel back the pages of this thread's stack below the current
/// frame (less a small margin). A client thread touches a few pages while it logs in, then waits on
/// a read for hours with a shallow stack; with ten thousand clients those idle
/// pages are a third of the server's memory. Pages given back are zero-filled
/// again if the thread goes deep later, so this is only ever a saving.
#[inline(never)]
pub fn trim_stack() {
    const PAGE: usize = 4096;
    const MARGIN: usize = 768;
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread, which is
    // destroyed after use; madvise only touches the part of this thread's own
    // stack mapping that lies more than a page below this frame, where no
    // live data is (the stack grows down and nothing here is borrowed there).
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut low: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut low, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if got != 0 {
            return;
        }
        let low = (low as usize).div_ceil(PAGE) * PAGE;
        // Keep what the read path below this frame needs; give back the rest.
        let high = here.saturating_sub(MARGIN) & !(PAGE - 1);
        if high > low && here < low + size {
            libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
        }
    }
}
