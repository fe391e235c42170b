//! Work a `Runtime` call leaves running on threads of its own (emptying the trash, starting
//! the next standby shim, the cgroup warm-up write), and waiting until all of it is done
//! ([`crate::Runtime::settle`]).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A count of running background jobs; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Background(Arc<(Mutex<usize>, Condvar)>);

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = *(self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Background")
            .field("running", &running)
            .finish()
    }
}

/// Counts a job as done when dropped, also when the job panicked.
struct Done(Background);

impl Drop for Done {
    fn drop(&mut self) {
        let (count, cv) = &*(self.0).0;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        cv.notify_all();
    }
}

impl Background {
    /// Runs `job` on a new thread named `name`; false when no thread could be started (the
    /// job then does not run).
    pub fn spawn(&self, name: &str, job: impl FnOnce() + Send + 'static) -> bool {
        {
            let (count, _) = &*self.0;
            *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        }
        let done = Done(self.clone());
        let started = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _done = done;
                job();
            });
        // On failure the closure, and `done` with it, was dropped: the count is back.
        started.is_ok()
    }

    /// Waits until no job runs, at most `limit`; true when none does.
    pub fn settle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (count, cv) = &*self.0;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = cv
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_waits_for_every_job_and_times_out_on_a_stuck_one() {
        let bg = Background::default();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        for _ in 0..3 {
            bg.spawn("job", || std::thread::sleep(Duration::from_millis(30)));
        }
        assert!(bg.settle(Duration::from_secs(5)));
        bg.spawn("stuck", move || {
            let _ = rx.recv();
        });
        assert!(!bg.settle(Duration::from_millis(50)));
        drop(tx);
        assert!(bg.settle(Duration::from_secs(5)));
        bg.spawn("panics", || panic!("job failed"));
        assert!(bg.settle(Duration::from_secs(5)));
    }
}
