//! Writing the Python stacks of every thread while the event loop is stuck.
//!
//! The stuck thread may hold the GIL forever (a busy loop in C), so this must work
//! without it: CPython's own traceback dumper (the one faulthandler uses from signal
//! handlers) reads the thread states without taking the GIL. We find it at run time, so
//! an interpreter that lacks it only loses the dump, not the worker restart.

type DumpFn = unsafe extern "C" fn(
    fd: libc::c_int,
    interp: *mut libc::c_void,
    current: *mut libc::c_void,
) -> *const libc::c_char;

pub fn dump_python_stacks(fd: libc::c_int) -> bool {
    // Public since 3.14; the underscore name before.
    for name in [
        &b"PyUnstable_DumpTracebackThreads\0"[..],
        &b"_Py_DumpTracebackThreads\0"[..],
    ] {
        let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr().cast()) };
        if !sym.is_null() {
            let dump: DumpFn = unsafe { std::mem::transmute(sym) };
            let header = b"Python stacks of the stuck worker (most recent call first):\n";
            unsafe {
                libc::write(fd, header.as_ptr().cast(), header.len());
                dump(fd, std::ptr::null_mut(), std::ptr::null_mut());
            }
            return true;
        }
    }
    false
}
