//! Helpers shared by the fuzz targets in `fuzz_targets/`.

use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

/// Stack of the thread the recursive parsers run on: far below the 2 MiB of
/// a Tokio worker or the 8 MiB of a main thread, so a parser whose depth is
/// bounded by its input rather than by its limit overflows here (and the
/// abort is a crash libFuzzer records) long before it would in production.
pub const SMALL_STACK: usize = 512 * 1024;

type Job = Box<dyn FnOnce() + Send>;

/// The one long-lived small-stack thread (spawning one per input would cost
/// more than most inputs take to parse).
static WORKER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

fn worker() -> &'static Mutex<Sender<Job>> {
    WORKER.get_or_init(|| {
        init();
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("fuzz-small-stack".into())
            .stack_size(SMALL_STACK)
            .spawn(move || {
                overflow::alt_stack();
                for job in queue {
                    job();
                }
            })
            .expect("spawning the small-stack thread");
        Mutex::new(jobs)
    })
}

/// Runs `f` on the [`SMALL_STACK`] thread and returns its result. A panic
/// there aborts the process (libfuzzer-sys's panic hook), and so does a
/// stack overflow (see [`overflow`]): either way libFuzzer saves the input.
pub fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (reply, result) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = reply.send(f());
    });
    worker().lock().unwrap_or_else(|e| e.into_inner()).send(job).expect("the small-stack thread is running");
    result.recv().expect("the small-stack thread answered")
}

/// Makes a stack overflow on the calling thread (and on the small-stack
/// thread) a crash libFuzzer saves; see [`overflow`]. Every target calls it
/// first: `fuzz_target!(init: omnishard_fuzz::init(), |data: &[u8]| …)`.
pub fn init() {
    overflow::install();
    overflow::alt_stack();
}

/// Input as text: `None` for bytes that are not UTF-8 (every parser here
/// takes `&str`; gRPC `string` fields are UTF-8-checked before they exist).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Stack overflows as crashes libFuzzer records.
///
/// Under libFuzzer, Rust's runtime never starts (libFuzzer owns `main`), so
/// no thread gets Rust's guard-page handler, and libFuzzer's own SIGSEGV
/// handler runs on the faulting stack: a stack overflow killed the process
/// before anything was written, and the input was lost. Here SIGSEGV and
/// SIGBUS get a handler on an alternate stack that says what happened and
/// aborts; libFuzzer's SIGABRT handler then saves the input as `crash-…`.
pub mod overflow {
    /// Alternate signal stack per thread: room for libFuzzer's crash report.
    const ALT_STACK: usize = 256 * 1024;

    extern "C" fn on_segv(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
        const MESSAGE: &[u8] = b"\n==fuzz== SIGSEGV: a stack overflow (the input recursed too deep for the stack)\n";
        // SAFETY: write(2) and abort(3) are async-signal-safe.
        unsafe {
            libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
            libc::abort();
        }
    }

    static INSTALLED: std::sync::Once = std::sync::Once::new();

    std::thread_local! {
        static HAS_ALT_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Sends SIGSEGV and SIGBUS to [`on_segv`], on the alternate stack
    /// (once; libFuzzer, installing its handlers later, chains to it).
    pub fn install() {
        // SAFETY: a zeroed sigaction is valid; every field used is set below.
        INSTALLED.call_once(|| unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_segv as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            for signal in [libc::SIGSEGV, libc::SIGBUS] {
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        });
    }

    /// Gives the calling thread an alternate signal stack, once (leaked:
    /// the threads that call this live as long as the process).
    pub fn alt_stack() {
        if HAS_ALT_STACK.replace(true) {
            return;
        }
        let stack: &'static mut [u8] = Box::leak(vec![0u8; ALT_STACK].into_boxed_slice());
        let alt = libc::stack_t { ss_sp: stack.as_mut_ptr().cast(), ss_flags: 0, ss_size: ALT_STACK };
        // SAFETY: the stack is valid memory for the rest of the process.
        unsafe {
            libc::sigaltstack(&alt, std::ptr::null_mut());
        }
    }
}
