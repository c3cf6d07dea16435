//! Run `n` indexed jobs with at most `concurrency` in flight.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use anyhow::Context;

/// Runs `job(0) .. job(n-1)`, `concurrency` workers pulling the next index,
/// and returns the results in index order. Stops handing out work at the
/// first error and returns it.
pub async fn run<T, F, Fut>(n: usize, concurrency: usize, job: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<Option<T>>>> = Arc::new(Mutex::new((0..n).map(|_| None).collect()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (job, next, failed, results) =
            (job.clone(), next.clone(), failed.clone(), results.clone());
        workers.spawn(async move {
            loop {
                if failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(());
                }
                match job(i).await {
                    Ok(value) => {
                        let mut slots = results.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                        slots[i] = Some(value);
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        });
    }
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        let outcome = joined.context("a worker task panicked").and_then(|r| r);
        if let Err(e) = outcome {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let slots = std::mem::take(&mut *results.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| slot.with_context(|| format!("job {i} produced no result")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_keep_index_order() {
        let out = run(50, 7, |i| async move {
            tokio::task::yield_now().await;
            Ok(i * 2)
        })
        .await
        .expect("all succeed");
        assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn first_error_is_returned() {
        let error = run(20, 3, |i| async move {
            if i == 5 {
                anyhow::bail!("job five failed")
            } else {
                Ok(i)
            }
        })
        .await
        .expect_err("one fails");
        assert_eq!(error.to_string(), "job five failed");
    }

    #[tokio::test]
    async fn zero_jobs() {
        let out: Vec<u8> = run(0, 8, |_| async { Ok(1) }).await.expect("nothing to do");
        assert!(out.is_empty());
    }
}
