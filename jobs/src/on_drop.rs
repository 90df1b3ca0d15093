//! Cleanup that must finish although its owner is being dropped (a job's
//! future dropped by Ctrl-C, SIGTERM or a stage timeout): deleting a lake
//! lock, aborting an upload.

use std::future::Future;

/// Run `cleanup` to its end from a `Drop`: in place on a multi-threaded
/// runtime (the process may exit right after the drop), spawned on a
/// current-thread one, not at all outside a runtime.
pub(crate) fn finish(cleanup: impl Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(cleanup));
        }
        Ok(h) => {
            h.spawn(cleanup);
        }
        Err(_) => {}
    }
}
