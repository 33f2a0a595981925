//! System calls made without libc, for a child between its birth and its
//! exec (`spawn.rs`), and the clone that starts a child on a stack of its
//! own in the daemon's memory (`spawn::spawn_shared`).
//!
//! Why not libc: such a child shares the daemon's memory until it execs,
//! and libc's wrappers write `errno`, which lives in the daemon's thread
//! (one failing `chdir` there would change the errno the daemon is about to
//! read). These touch nothing but registers and return `-errno`.
//!
//! x86_64 makes the calls itself. Elsewhere `call` goes through libc's
//! `syscall` (fit for a forked child only, whose memory is its own) and
//! `clone_on` answers ENOSYS, so children there are forked.

use std::ffi::c_void;

/// What a child started by `clone_on` runs, on its own stack, with the
/// pointer given. It never returns.
pub type Entry = unsafe extern "C" fn(*mut c_void) -> !;

/// System call `n` with up to four arguments: its result, or `-errno`.
///
/// # Safety
/// As the system call itself: every pointer among the arguments is valid
/// for what the call does with it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn call(n: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the Linux x86_64 system call convention: number and result in
    // rax, arguments in rdi, rsi, rdx, r10; the kernel clobbers rcx and r11
    // and uses no user stack.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// System call `n` with up to four arguments: its result, or `-errno`.
///
/// # Safety
/// As the system call itself; and only in a process whose memory is its
/// own (libc sets errno).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub unsafe fn call(n: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    // SAFETY: as this function's contract.
    let r = unsafe { libc::syscall(n, a, b, c, d) };
    match r {
        -1 => -(nix::errno::Errno::last_raw() as isize),
        r => r as isize,
    }
}

/// Every signal's disposition back to the default (an ignored one would
/// survive exec; a handler of the daemon's must never run elsewhere). All
/// 64, through the kernel: libc's `signal` refuses the two it keeps for
/// itself (32 and 33), which stay ignored if whoever started the daemon
/// ignored them. The mask is left as it is (`set_mask`).
///
/// # Safety
/// In a child before its exec (or the spawner as it starts): the daemon's
/// handlers are gone from this process.
pub unsafe fn default_signals() {
    // The kernel's sigaction, zeroed: SIG_DFL, no flags, nothing masked.
    let dfl = [0u64; 4];
    for sig in 1..=crate::sys::MAX_SIGNAL {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            let (n, act) = (sig as usize, dfl.as_ptr() as usize);
            // SAFETY: as this function's contract; a live, zeroed struct
            // of the kernel's size or larger, and its 8-byte signal set.
            unsafe { call(libc::SYS_rt_sigaction, n, act, 0, 8) };
        }
    }
}

/// Set this thread's signal mask to `mask` (bit n-1: signal n), all 64
/// through the kernel (libc's `sigfillset` leaves out 32 and 33); the mask
/// it had.
pub fn set_mask(mask: u64) -> u64 {
    let mut old = 0u64;
    let how = libc::SIG_SETMASK as usize;
    let (new, was) = (&mask as *const u64 as usize, &mut old as *mut u64 as usize);
    // SAFETY: rt_sigprocmask(2) with two live 8-byte sets on this stack;
    // it changes only this thread's mask.
    unsafe { call(libc::SYS_rt_sigprocmask, how, new, was, 8) };
    old
}

/// Whether `clone_on` can start a child here.
pub const CAN_CLONE_ON: bool = cfg!(target_arch = "x86_64");

/// `clone3(args, size)` (`n` = `SYS_clone3`) or `clone(a, b, c, d, e)`
/// (`SYS_clone`) for a child with a stack of its own, which the kernel
/// puts its stack pointer at the top of and which there calls
/// `entry(arg)`. In the caller: the child's pid, or `-errno`.
///
/// # Safety
/// The arguments name a stack (16-byte aligned top) that nothing else uses
/// while the child runs on it; `entry` makes raw system calls only (see
/// the module's doc) and reads only memory that outlives its use; every
/// fd and pointer in the arguments is valid.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn clone_on(
    n: libc::c_long,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
    entry: Entry,
    arg: *mut c_void,
) -> isize {
    let ret: isize;
    // SAFETY: as `call`, and in the child (rax 0) nothing of this frame is
    // used: it is on its new stack, takes `entry` and `arg` from registers
    // the kernel copied, and never comes back here (`entry` does not
    // return; ud2 if it did). The parent goes on at 2.
    unsafe {
        core::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") n as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            in("r8") e,
            in("r12") entry,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Elsewhere: ENOSYS, and the daemon forks.
///
/// # Safety
/// None needed; the signature is x86_64's.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub unsafe fn clone_on(
    _n: libc::c_long,
    _a: usize,
    _b: usize,
    _c: usize,
    _d: usize,
    _e: usize,
    _entry: Entry,
    _arg: *mut c_void,
) -> isize {
    -(libc::ENOSYS as isize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_answers_its_result_or_minus_errno() {
        // SAFETY: getpid takes nothing; close of an fd that cannot be open.
        unsafe {
            assert_eq!(
                call(libc::SYS_getpid, 0, 0, 0, 0),
                std::process::id() as isize
            );
            assert_eq!(
                call(libc::SYS_close, -1i32 as usize, 0, 0, 0),
                -(libc::EBADF as isize)
            );
        }
        // errno is not touched.
        nix::errno::Errno::set_raw(0);
        // SAFETY: as above.
        let r = unsafe { call(libc::SYS_close, -1i32 as usize, 0, 0, 0) };
        assert!(r < 0);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(nix::errno::Errno::last_raw(), 0);
        }
    }
}
