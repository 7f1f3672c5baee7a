//! The workspace's one mutex policy.
//!
//! Herald's mutexes guard plain data (queues, maps of members and channels) that every
//! critical section leaves consistent before it can panic, so a panic in one holder must not
//! turn every later caller into a second panic. [`lock`] therefore takes a poisoned mutex as
//! it is. Every crate of the workspace locks its std mutexes through it.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking it even if a previous holder panicked (see the module docs).
///
/// ```
/// let m = std::sync::Mutex::new(1);
/// *herald_core::sync::lock(&m) += 1;
/// assert_eq!(*herald_core::sync::lock(&m), 2);
/// ```
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_is_still_usable() {
        let m = std::sync::Arc::new(Mutex::new(vec![1]));
        let m2 = std::sync::Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _guard = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        lock(&m).push(2);
        assert_eq!(*lock(&m), [1, 2]);
    }
}
